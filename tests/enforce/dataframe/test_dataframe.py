"""Dataframe writers and source readers: real pandas / pyarrow / numpy, files checked on disk."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
import pyarrow.feather as pa_feather
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from guard_kernel.audit import read_records
from guard_kernel.decision import Decision, Guard, GuardDenied
from guard_kernel.decision import guard as session
from guard_kernel.enforce import lazy
from guard_kernel.enforce.dataframe import writers as dataframe
from guard_kernel.enforce.runtime import hook as runtime
from guard_kernel.policy import Action, load_policy

POLICY = """\
version: 1
name: dataframe-test
defaults: {{read: allow, write: deny, export: deny, network: deny, shell: deny}}
sources:
  raw: {{paths: ["data/raw/**"]}}
scratch: ["scratch/**"]
limits: {{max_rows: {{agent: 5, human: 10}}, on_exceed: {on_exceed}}}
rules:
  - id: scratch-writes
    effect: allow
    actions: [file.write, file.delete, export.dataframe]
    where: {{path: "scratch/**"}}
  - id: agent-no-egress
    effect: deny
    actors: [agent]
    actions: [export.clipboard, net.*, shell.*]
"""

ROWS = 20
CAP = 5


@dataclass
class Project:
    root: Path
    guard: Guard
    csv: Path
    parquet: Path
    digests: dict[str, bytes]
    notes: list[Decision] = field(default_factory=list)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in read_records(self.guard.audit_path) if all(r.get(k) == v for k, v in match.items())]

    def sources_intact(self) -> bool:
        return all(Path(p).read_bytes() == b for p, b in self.digests.items())


def _frame(n: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n), "name": [f"n{i}" for i in range(n)], "amount": [i * 1.5 for i in range(n)]})


def _make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_exceed: str = "truncate") -> Iterator[Project]:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (tmp_path / "scratch").mkdir()
    df = _frame()
    df.to_csv(raw / "people.csv", index=False)  # built before any guard is current
    df.to_parquet(raw / "people.parquet")
    (tmp_path / "policy.yaml").write_text(POLICY.format(on_exceed=on_exceed))
    monkeypatch.chdir(tmp_path)
    notes: list[Decision] = []
    guard = Guard(load_policy(tmp_path / "policy.yaml", str(tmp_path)), actor="agent",
                  audit_dir=str(tmp_path / "audit"), notify=notes.append)
    runtime.install(guard)
    dataframe.install(guard)
    digests = {str(p): p.read_bytes() for p in raw.iterdir()}
    try:
        yield Project(tmp_path, guard, raw / "people.csv", raw / "people.parquet", digests, notes)
    finally:
        dataframe.uninstall()
        session.set_current(None)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    yield from _make(tmp_path, monkeypatch)


@pytest.fixture
def strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    yield from _make(tmp_path, monkeypatch, on_exceed="deny")


# ------------------------------------------------------------------ writers

Writer = Callable[[pd.DataFrame, str], Any]

WRITERS: dict[str, Writer] = {
    "to_csv": lambda df, p: df.to_csv(p),
    "to_csv-built-name": lambda df, p: getattr(df, "to_" + "csv")(p),
    "to_parquet": lambda df, p: df.to_parquet(p),
    "to_json": lambda df, p: df.to_json(p),
    "to_pickle": lambda df, p: df.to_pickle(p),
    "pd.to_pickle": lambda df, p: pd.to_pickle(df, p),
    "to_feather": lambda df, p: df.to_feather(p),
    "to_html": lambda df, p: df.to_html(p),
    "to_latex": lambda df, p: df.to_latex(p),
    "to_xml": lambda df, p: df.to_xml(p, parser="etree"),
    "series.to_csv": lambda df, p: df["id"].to_csv(p),
    "to_excel": lambda df, p: df.to_excel(p),
    "pq.write_table": lambda df, p: pq.write_table(pa.Table.from_pandas(df), p),
    "pq.ParquetWriter": lambda df, p: pq.ParquetWriter(p, pa.Table.from_pandas(df).schema),
    "pa_csv.write_csv": lambda df, p: pa_csv.write_csv(pa.Table.from_pandas(df), p),
    "feather.write_feather": lambda df, p: pa_feather.write_feather(df, p),
    "pa.OSFile": lambda df, p: pa.OSFile(p, "w"),
    "pa.output_stream": lambda df, p: pa.output_stream(p),
    "to_stata": lambda df, p: df.to_stata(p),
    "to_orc": lambda df, p: df.to_orc(p),
    "to_hdf": lambda df, p: df.to_hdf(p, key="t"),
    "to_markdown": lambda df, p: df.to_markdown(p),
    "pq.write_to_dataset": lambda df, p: pq.write_to_dataset(pa.Table.from_pandas(df), p),
    "ds.write_dataset": lambda df, p: pa_ds.write_dataset(pa.Table.from_pandas(df), p, format="parquet"),
    "ipc.new_file": lambda df, p: pa.ipc.new_file(p, pa.Table.from_pandas(df).schema),
    "np.save": lambda df, p: np.save(p, df["id"].to_numpy()),
    "np.savetxt": lambda df, p: np.savetxt(p, df["id"].to_numpy()),
    "ndarray.tofile": lambda df, p: df["id"].to_numpy().tofile(p),
    # polars writes from Rust: only its wrappers see these
    "pl.write_csv": lambda df, p: pl.from_pandas(df).write_csv(p),
    "pl.write_parquet": lambda df, p: pl.from_pandas(df).write_parquet(p),
    "pl.write_ipc": lambda df, p: pl.from_pandas(df).write_ipc(p),
    "pl.write_ipc_stream": lambda df, p: pl.from_pandas(df).write_ipc_stream(p),
    "pl.write_json": lambda df, p: pl.from_pandas(df).write_json(p),
    "pl.write_ndjson": lambda df, p: pl.from_pandas(df).write_ndjson(p),
    "pl.write_avro": lambda df, p: pl.from_pandas(df).write_avro(p),
    "pl.sink_parquet": lambda df, p: pl.from_pandas(df).lazy().sink_parquet(p),
    "pl.sink_csv": lambda df, p: pl.from_pandas(df).lazy().sink_csv(p),
    "pl.sink_ipc": lambda df, p: pl.from_pandas(df).lazy().sink_ipc(p),
    "pl.sink_ndjson": lambda df, p: pl.from_pandas(df).lazy().sink_ndjson(p),
}

NEEDS = {"to_excel": "openpyxl", "to_xml": "lxml", "to_latex": "jinja2", "to_hdf": "tables",
         "to_markdown": "tabulate"}


def _skip_missing(name: str) -> None:
    need = NEEDS.get(name)
    if need == "lxml":
        return  # parser="etree" needs nothing extra
    if need and importlib.util.find_spec(need) is None:
        pytest.skip(f"{need} is not installed")


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_denied_export_leaves_no_file(project: Project, name: str) -> None:
    # no skip for missing optional engines: the decision comes before pandas looks for them
    with pytest.raises(GuardDenied):
        WRITERS[name](_frame(), "out.npy")
    assert not Path("out.npy").exists()
    assert project.records(decision="deny")


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_export_into_a_source_is_denied(project: Project, name: str) -> None:
    with pytest.raises(GuardDenied) as err:
        WRITERS[name](_frame(3), str(project.csv))
    assert err.value.decision.rules[0].id == "source:raw"
    assert project.sources_intact()


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_scratch_exports_just_work(project: Project, name: str) -> None:
    _skip_missing(name)
    # np.save adds .npy to other names; Excel picks its engine from the extension
    target = f"scratch/out-{name}" + (".xlsx" if name == "to_excel" else ".npy")
    result = WRITERS[name](_frame(), target)
    if hasattr(result, "close"):
        result.close()
    assert Path(target).exists()
    assert str(project.root / target) in project.guard.owned_files
    assert project.notes == []
    assert project.records(decision="deny") == []


def test_polars_writers_without_a_path(project: Project) -> None:
    df = pl.from_pandas(_frame())
    assert df.write_csv().startswith("id,name")  # returned as a string: nothing leaves the process
    with pytest.raises(GuardDenied):
        df.write_excel()  # polars would write ./dataframe.xlsx
    assert not Path("dataframe.xlsx").exists()
    with pytest.raises(GuardDenied) as err:
        df.write_clipboard()
    assert err.value.decision.action is Action.EXPORT_CLIPBOARD
    with pytest.raises(GuardDenied):
        df.write_database("t", "sqlite:///out.db")
    assert not Path("out.db").exists()
    from guard_kernel.enforce.dataframe.patching import is_wrapper

    for cls, names in ((pl.DataFrame, ("write_csv", "write_parquet", "write_excel", "write_delta", "write_iceberg")),
                       (pl.LazyFrame, ("sink_csv", "sink_parquet", "sink_ipc", "sink_ndjson"))):
        assert all(is_wrapper(vars(cls)[n]) for n in names), cls


def test_in_memory_targets_need_no_decision(project: Project) -> None:
    df = _frame()
    assert df.to_csv().startswith(",id,name")
    buf = io.StringIO()
    df.to_csv(buf)
    assert buf.getvalue()
    raw = io.BytesIO()
    df.to_parquet(raw)
    assert raw.getvalue()[:4] == b"PAR1"
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df), sink)
    assert df.to_markdown() if importlib.util.find_spec("tabulate") else True
    assert df.to_string()
    assert project.records(kind="export") == []


def test_wrapped_originals_are_hidden(project: Project) -> None:
    for fn in (pd.DataFrame.to_csv, pd.DataFrame.to_parquet, pd.Series.to_csv, pq.write_table, np.save):
        assert not hasattr(fn, "__wrapped__")
    assert pd.DataFrame.to_csv.__name__ == "to_csv"
    assert "CSV" in (pd.DataFrame.to_csv.__doc__ or "")


def test_writer_list_comes_from_pandas() -> None:
    from pandas.core.generic import NDFrame

    names = {n for cls in (NDFrame, pd.DataFrame, pd.Series) for n, _ in dataframe.pandas_writer_names(cls)}
    assert {"to_csv", "to_parquet", "to_excel", "to_json", "to_feather", "to_hdf", "to_pickle", "to_sql",
            "to_stata", "to_orc", "to_html", "to_latex", "to_markdown", "to_xml", "to_clipboard",
            "to_string"} <= names
    assert not names & {"to_dict", "to_numpy", "to_records"}


def test_hdfstore_is_decided_before_it_opens(project: Project) -> None:
    with pytest.raises(GuardDenied):
        pd.HDFStore("out.h5", mode="w")  # decided before pandas even looks for PyTables
    assert not Path("out.h5").exists()


def test_clipboard_is_denied_for_an_agent(project: Project) -> None:
    with pytest.raises(GuardDenied) as err:
        _frame().to_clipboard()
    assert err.value.decision.action.value == "export.clipboard"


def test_to_sql(project: Project) -> None:
    df = _frame(3)
    mem = sqlite3.connect(":memory:")
    df.to_sql("t", mem)  # nothing leaves the process
    assert mem.execute("select count(*) from t").fetchone() == (3,)
    con = sqlite3.connect("scratch/ok.db")
    df.to_sql("t", con)
    con.close()
    outside = sqlite3.connect("outside.db")  # sqlite creates the file natively; the export is what we stop
    with pytest.raises(GuardDenied):
        df.to_sql("t", outside)
    assert outside.execute("select count(*) from sqlite_master").fetchone() == (0,)
    outside.close()


def test_uninstall_restores_the_originals(project: Project) -> None:
    wrapped = pd.DataFrame.to_parquet
    dataframe.uninstall()
    assert pd.DataFrame.to_parquet is not wrapped and not dataframe.installed()
    dataframe.install(project.guard)
    dataframe.install(project.guard)  # twice: harmless
    assert getattr(pd.DataFrame.to_parquet, "_guard_kernel_wrapper", False)


# ------------------------------------------------------------------ row caps


def test_read_csv_of_a_source_is_capped_once(project: Project) -> None:
    df = pd.read_csv(project.csv)
    assert len(df) == CAP
    trunc = project.records(kind="truncate")
    assert len(trunc) == 1 and trunc[0]["resource"] == str(project.csv) and trunc[0]["returned"] == CAP


def test_chunked_read_csv_is_one_read(project: Project) -> None:
    chunks = list(pd.read_csv(project.csv, chunksize=2))
    assert sum(len(c) for c in chunks) == CAP
    with pd.read_csv(project.csv, iterator=True) as reader:
        first = reader.get_chunk(3)
        rest = reader.read()
    assert len(first) + len(rest) == CAP
    assert len(project.records(kind="truncate")) == 2  # one per read, not per chunk


def test_small_reads_and_nrows_are_untouched(project: Project) -> None:
    assert len(pd.read_csv(project.csv, nrows=3)) == 3
    assert len(pd.read_csv(project.csv, nrows=CAP)) == CAP
    assert project.records(kind="truncate") == []


@pytest.mark.parametrize("read", [
    lambda p: pd.read_parquet(p),
    lambda p: pq.read_table(p),
    lambda p: pd.read_parquet(p, columns=["id"]),
])
def test_parquet_reads_of_a_source_are_capped(project: Project, read: Callable[[Path], Any]) -> None:
    result = read(project.parquet)
    assert (result.num_rows if isinstance(result, pa.Table) else len(result)) == CAP
    assert len(project.records(kind="truncate")) == 1


def test_pyarrow_csv_reader_is_capped(project: Project) -> None:
    assert pa_csv.read_csv(project.csv).num_rows == CAP


def test_polars_eager_readers_are_capped(project: Project) -> None:
    assert pl.read_csv(project.csv).height == CAP
    assert pl.read_parquet(project.parquet).height == CAP
    assert pl.read_csv(project.csv, n_rows=2).height == 2  # asked for fewer: untouched
    assert len(project.records(kind="truncate")) == 2
    assert pl.read_csv(project.csv, n_rows=CAP).height == CAP
    _frame().to_csv("scratch/copy.csv", index=False)
    assert pl.read_csv("scratch/copy.csv").height == ROWS  # not a source: not capped
    assert pl.scan_csv(project.csv).select(pl.len()).collect().item() == ROWS  # lazy aggregation sees every row


def test_native_readers_of_urls_ask_for_the_network(project: Project) -> None:
    """polars and pyarrow fetch URLs themselves, past the socket hooks: the wrapper decides."""
    url = "https://example.invalid/" + "data.csv"  # computed: the cell analysis cannot see it
    for read in (pl.read_csv, pl.scan_parquet, pa_csv.read_csv):
        with pytest.raises(GuardDenied) as err:
            read(url)
        assert err.value.decision.action is Action.NET_CONNECT and err.value.decision.resource == url
    assert len(project.records(action="net.connect", decision="deny")) == 3


def test_writes_to_a_url_ask_for_the_network(project: Project) -> None:
    df = pl.from_pandas(_frame())
    for write in (df.write_csv, df.write_parquet, df.lazy().sink_parquet, _frame().to_parquet):
        with pytest.raises(GuardDenied) as err:
            write("s3://bucket/" + "out.parquet")
        assert err.value.decision.action is Action.NET_CONNECT and err.value.decision.rules[0].id == "agent-no-egress"


def test_native_reads_follow_file_read_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    _frame().to_csv(tmp_path / "secrets" / "keys.csv", index=False)
    _frame().to_parquet(tmp_path / "secrets" / "keys.parquet")
    policy = tmp_path / "reads.yaml"
    policy.write_text(POLICY.format(on_exceed="truncate") + """\
  - id: no-secrets
    effect: deny
    actions: [file.read]
    where: {path: "secrets/**"}
""")
    monkeypatch.chdir(tmp_path)
    guard = Guard(load_policy(policy, str(tmp_path)), actor="agent", audit_dir=str(tmp_path / "audit"),
                  notify=lambda d: None)
    runtime.install(guard)
    dataframe.install(guard)
    try:
        for read, path in ((pl.read_csv, "secrets/keys.csv"), (pl.scan_parquet, "secrets/keys.parquet"),
                           (pq.read_table, "secrets/keys.parquet"), (pd.read_csv, "secrets/keys.csv")):
            with pytest.raises(GuardDenied) as err:
                read(path)
            assert err.value.decision.rules[0].id == "no-secrets", read
        assert len(pl.read_csv(_written(tmp_path))) == ROWS  # other files: read as before
    finally:
        dataframe.uninstall()
        session.set_current(None)


def _written(root: Path) -> str:
    (root / "scratch").mkdir(exist_ok=True)
    _frame().to_csv(root / "scratch" / "ok.csv", index=False)
    return "scratch/ok.csv"


def test_json_lines_and_feather_reads_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    _frame().to_json(raw / "people.jsonl", orient="records", lines=True)
    _frame().to_feather(raw / "people.feather")
    with contextmanager(_make)(tmp_path, monkeypatch) as project:  # around the files made above
        assert len(pd.read_json(raw / "people.jsonl", lines=True)) == CAP
        assert len(pd.read_json(raw / "people.jsonl", lines=True, nrows=2)) == 2
        assert len(pd.read_feather(raw / "people.feather")) == CAP
        assert pa_feather.read_table(raw / "people.feather").num_rows == CAP
        assert len(project.records(kind="truncate")) == 3


def test_reads_outside_sources_are_untouched(project: Project) -> None:
    _frame().to_csv("scratch/copy.csv", index=False)
    _frame().to_parquet("scratch/copy.parquet")
    assert len(pd.read_csv("scratch/copy.csv")) == ROWS
    assert len(pd.read_parquet("scratch/copy.parquet")) == ROWS
    assert sum(len(c) for c in pd.read_csv("scratch/copy.csv", chunksize=7)) == ROWS
    assert project.records(kind="truncate") == []


def test_on_exceed_deny_refuses_the_read(strict: Project) -> None:
    with pytest.raises(GuardDenied) as err:
        pd.read_csv(strict.csv)
    assert "row cap" in str(err.value)
    assert len(pd.read_csv(strict.csv, nrows=CAP)) == CAP
    assert strict.records(decision="deny", kind="read")


def test_source_bytes_unchanged_after_everything(project: Project) -> None:
    for name in ("to_csv", "to_parquet", "pq.write_table", "np.save"):
        with pytest.raises(GuardDenied):
            WRITERS[name](_frame(), str(project.parquet))
    assert project.sources_intact()
    assert sorted(os.listdir(project.csv.parent)) == ["people.csv", "people.parquet"]


# ------------------------------------------------------------------ libraries imported after install

LATE_IMPORT = r"""
import importlib, json, os, sys, threading
sys.path.insert(0, {repo!r})
from guard_kernel.enforce.dataframe import writers as dataframe
from guard_kernel.enforce.runtime import hook as runtime
from guard_kernel.policy import load_policy
from guard_kernel.decision.guard import Guard, GuardDenied

guard = Guard(load_policy("policy.yaml", os.getcwd()), actor="agent", audit_dir="audit")
runtime.install(guard)
dataframe.install(guard)
out = {{"imported_at_install": sorted(m for m in ("pandas", "numpy", "pyarrow") if m in sys.modules)}}

def denied(fn):
    try:
        fn()
    except GuardDenied:
        return True
    return False

def wrapped(obj):
    return getattr(obj, "_guard_kernel_wrapper", False) is True

seen = {{}}
def in_thread():  # a library first imported in another thread is wrapped before that thread gets it
    import pyarrow.csv as pa_csv
    seen["csv"] = wrapped(pa_csv.write_csv)
t = threading.Thread(target=in_thread)
t.start()
t.join()
out["thread"] = seen["csv"]

import pandas as pd
df = pd.DataFrame({{"a": [1, 2]}})
out["to_csv_denied"] = denied(lambda: df.to_csv("out.csv"))
df.to_csv("scratch/ok.csv")
import numpy as np
out["np_save_denied"] = denied(lambda: np.save("out.npy", np.arange(3)))
from pyarrow.parquet import write_table  # the name taken at import is the wrapper
import pyarrow as pa
out["write_table_denied"] = denied(lambda: write_table(pa.table({{"a": [1]}}), "out.parquet"))
import pyarrow.parquet.core as core
out["one_wrapper"] = write_table is core.write_table
importlib.reload(pa_csv := sys.modules["pyarrow.csv"])
out["after_reload"] = wrapped(pa_csv.write_csv)
out["files"] = sorted(f for f in os.listdir(".") if f.startswith("out"))
dataframe.uninstall()
pq = sys.modules["pyarrow.parquet"]
out["restored"] = not any(wrapped(f) for f in (pq.write_table, core.write_table, pd.DataFrame.to_csv, np.save,
                                                pd.read_csv, pa_csv.write_csv))
print(json.dumps(out))
"""


def test_libraries_imported_after_install_are_wrapped_before_use(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "policy.yaml").write_text(POLICY.format(on_exceed="truncate"))
    repo = str(Path(__file__).resolve().parents[3])
    proc = subprocess.run([sys.executable, "-c", LATE_IMPORT.format(repo=repo)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"imported_at_install": [], "thread": True, "to_csv_denied": True, "np_save_denied": True,
                   "write_table_denied": True, "one_wrapper": True, "after_reload": True, "files": [],
                   "restored": True}
    assert (tmp_path / "scratch" / "ok.csv").exists()


FAKE_LIB = "VALUE = 1\nimports = globals().get('imports', 0) + 1\n"


@pytest.fixture
def fake_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real module on disk, not imported yet, removed from sys.modules afterwards."""
    name = f"gk_fake_lib_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FAKE_LIB)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        sys.modules.pop(name, None)


def test_post_import_hook_runs_before_the_importer_gets_the_module(fake_lib: str) -> None:
    calls: list[int] = []

    def mark(module: Any) -> None:
        calls.append(module.VALUE)
        module.guarded = True

    unhook = lazy.when_imported(fake_lib, mark)
    try:
        got: list[bool] = []
        t = threading.Thread(target=lambda: got.append(importlib.import_module(fake_lib).guarded))
        t.start()
        t.join()
        assert got == [True] and calls == [1]
        mod = importlib.reload(sys.modules[fake_lib])  # a reload runs the hook again
        assert mod.guarded and calls == [1, 1]
    finally:
        unhook()
    assert fake_lib not in lazy.hooked()


def test_a_failing_hook_fails_the_import_closed(fake_lib: str, tmp_path: Path) -> None:
    guard = Guard(load_policy(_policy_file(tmp_path), str(tmp_path)), actor="agent", audit_dir=str(tmp_path / "audit"))
    session.set_current(guard)

    def broken(module: Any) -> None:
        raise RuntimeError("cannot wrap")

    unhook = lazy.when_imported(fake_lib, broken)
    try:
        with pytest.raises(GuardDenied) as err:
            importlib.import_module(fake_lib)
        assert "cannot wrap" in str(err.value) and fake_lib in str(err.value)
        assert fake_lib not in sys.modules  # the importer never got an unguarded module
        denials = [r for r in read_records(guard.audit_path) if r["decision"] == "deny"]
        assert [r["resource"] for r in denials] == [fake_lib]
    finally:
        unhook()
        session.set_current(None)


def _policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(on_exceed="truncate"))
    return path
