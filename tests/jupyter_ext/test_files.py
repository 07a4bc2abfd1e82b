"""The server's own file actions under the policy: Contents API, downloads, and the ContentsManager itself.

A real Jupyter Server (pytest-jupyter) whose root is a sample project; the extension is named on
the command line with policies/server.yaml (the shipped default plus a file.read denial on secrets/).
Every refused action must leave the file as it was (checksums), and land in the server chain.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_core import jp_asyncio_loop  # noqa: F401  (autouse again here)
from pytest_jupyter.jupyter_server import jp_server_cleanup  # noqa: F401
from server_setup import AGENT_TOKEN, auth, chain_path, guard_config, refused, server_policy, server_records

from guard_kernel.audit import verify
from guard_kernel.demo import Workspace
from jupyter_ext.files import GuardForbidden
from jupyter_ext.server_audit import SCHEMA_ID


@pytest.fixture
def audit(project: Workspace) -> Path:
    return project.root / "audit"


@pytest.fixture
def jp_root_dir(project: Workspace) -> Path:
    return project.root


@pytest.fixture
def jp_server_config(project: Workspace, audit: Path) -> dict[str, Any]:
    return guard_config(project, audit)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "<absent>"


def _protected(project: Workspace, audit: Path) -> list[Path]:
    """Every file the refused actions aim at (sources, the policy, the audit chain)."""
    return [project.warehouse, *project.raw_files, server_policy(project), project.policy("default"),
            *sorted(audit.glob("*.jsonl"))]


def _put_text(path: str, text: str) -> dict[str, Any]:
    return {"method": "PUT", "body": json.dumps({"type": "file", "format": "text", "content": text})}


def _cases(project: Workspace, audit: Path) -> list[tuple[str, str, dict[str, Any], str]]:
    """(name, API path, fetch arguments, rule expected)."""
    raw = project.raw_files[0].relative_to(project.root).as_posix()
    chain = next(audit.glob("server-*.jsonl")).relative_to(project.root).as_posix()
    upload = base64.b64encode(b"not a database").decode()
    return [
        ("save over a raw file", raw, _put_text(raw, "x,y\n1,2\n"), "source:raw"),
        ("upload over the warehouse", "data/warehouse.duckdb",
         {"method": "PUT", "body": json.dumps({"type": "file", "format": "base64", "content": upload})},
         "source:warehouse"),
        ("chunked upload into raw", "data/raw/new.csv",
         {"method": "PUT", "body": json.dumps({"type": "file", "format": "base64", "content": upload, "chunk": 1})},
         "source:raw"),
        ("rename a raw file away", raw, {"method": "PATCH", "body": json.dumps({"path": "scratch/moved.csv"})},
         "source:raw"),
        ("rename into raw", "scratch/seed.txt", {"method": "PATCH", "body": json.dumps({"path": "data/raw/seed.txt"})},
         "source:raw"),
        ("copy into raw", "data/raw", {"method": "POST", "body": json.dumps({"copy_from": "scratch/seed.txt"})},
         "source:raw"),
        ("delete a raw file", raw, {"method": "DELETE"}, "source:raw"),
        ("checkpoint of a raw file (written beside it)", raw + "/checkpoints", {"method": "POST", "body": ""},
         "source:raw"),
        ("restore a raw file's checkpoint", raw + "/checkpoints/checkpoint", {"method": "POST", "body": ""},
         "source:raw"),
        ("delete the warehouse", "data/warehouse.duckdb", {"method": "DELETE"}, "source:warehouse"),
        ("save over the policy in force", "policies/server.yaml", _put_text("", "version: 1\n"), "policy-file"),
        ("delete the policy in force", "policies/server.yaml", {"method": "DELETE"}, "policy-file"),
        ("rename the policy", "policies/server.yaml", {"method": "PATCH", "body": json.dumps({"path": "p.yaml"})},
         "policy-file"),
        ("save over the server chain", chain, _put_text("", "{}\n"), "audit-dir"),
        ("delete the server chain", chain, {"method": "DELETE"}, "audit-dir"),
        ("rename the server chain", chain, {"method": "PATCH", "body": json.dumps({"path": "scratch/a.jsonl"})},
         "audit-dir"),
        ("new file in the audit folder", "audit/new.jsonl", _put_text("", "{}\n"), "audit-dir"),
        ("copy into the audit folder", "audit", {"method": "POST", "body": json.dumps({"copy_from": "scratch/seed.txt"})},
         "audit-dir"),
        ("write outside scratch (write default)", "notes.txt", _put_text("", "hi\n"), "defaults.write"),
    ]


async def test_contents_api_refuses_sources_policies_and_audits(jp_fetch: Any, jp_serverapp: Any, project: Workspace,
                                                                audit: Path) -> None:
    (project.scratch / "seed.txt").write_text("seed\n")
    for name, path, kwargs, rule in _cases(project, audit):
        before = {p: _sha(p) for p in _protected(project, audit) if "server-" not in p.name}
        code, body = await refused(jp_fetch("api", "contents", path, **kwargs))
        assert code == 403, name
        assert body["guard"]["rules"][0]["id"] == rule, (name, body)
        assert body["guard"]["code"] == "policy_violation" and body["message"], name
        assert {p: _sha(p) for p in before} == before, name  # untouched
    assert not (project.raw / "seed.txt").exists() and not (project.root / "notes.txt").exists()
    assert not (project.raw / "new.csv").exists() and not (audit / "new.jsonl").exists()
    assert not (project.raw / ".ipynb_checkpoints").exists()
    denied = [r for r in server_records(jp_serverapp) if r["kind"] == "file" and r["decision"] == "deny"]
    assert len(denied) >= len(_cases(project, audit))
    assert {r["via"] for r in denied} == {"http"}


async def test_scratch_writes_succeed(jp_fetch: Any, jp_serverapp: Any, project: Workspace, audit: Path) -> None:
    r = await jp_fetch("api", "contents", "scratch/out.txt", **_put_text("", "result\n"))
    assert r.code in (200, 201) and (project.scratch / "out.txt").read_text() == "result\n"
    await jp_fetch("api", "contents", "scratch/out.txt", method="PATCH", body=json.dumps({"path": "scratch/out2.txt"}))
    assert (project.scratch / "out2.txt").exists() and not (project.scratch / "out.txt").exists()
    r = await jp_fetch("api", "contents", "scratch", method="POST", body=json.dumps({"copy_from": "scratch/out2.txt"}))
    copied = project.root / json.loads(r.body)["path"]
    assert copied.read_text() == "result\n"
    # copying a source INTO scratch is a read and a scratch write: allowed
    raw = project.raw_files[0]
    r = await jp_fetch("api", "contents", "scratch", method="POST",
                       body=json.dumps({"copy_from": raw.relative_to(project.root).as_posix()}))
    assert (project.root / json.loads(r.body)["path"]).read_bytes() == raw.read_bytes()
    await jp_fetch("api", "contents", "scratch/out2.txt", method="DELETE")
    assert not (project.scratch / "out2.txt").exists()
    allowed = [r for r in server_records(jp_serverapp) if r["kind"] == "file" and r["decision"] == "allow"]
    assert {"file.write", "file.delete", "file.read"} <= {r["action"] for r in allowed}


async def test_downloads_of_read_denied_paths_refused(jp_fetch: Any, project: Workspace) -> None:
    for parts in (("files", "secrets", "key.txt"), ("api", "contents", "secrets", "key.txt"),
                  ("nbconvert", "script", "secrets", "key.txt")):
        code, body = await refused(jp_fetch(*parts))
        assert code == 403 and body["guard"]["rules"][0]["id"] == "no-secrets", parts
    listing = await jp_fetch("api", "contents", "secrets")  # the folder's listing is not the file's content
    assert [c["name"] for c in json.loads(listing.body)["content"]] == ["key.txt"]
    ordinary = await jp_fetch("files", project.raw_files[0].relative_to(project.root).as_posix())
    assert ordinary.body == project.raw_files[0].read_bytes()


async def test_contents_manager_writes_from_an_extension_refused(jp_serverapp: Any, project: Workspace,
                                                                 audit: Path) -> None:
    """No HTTP request at all: a server extension (a collaboration room, an MCP server running in the
    server) calls the ContentsManager; it is decided as the server-side actor."""
    cm = jp_serverapp.contents_manager
    raw = project.raw_files[0]
    api = raw.relative_to(project.root).as_posix()
    before = _sha(raw)
    model = {"type": "file", "format": "text", "content": "overwritten\n"}
    calls = [("save", lambda: cm.save(model, api)), ("delete", lambda: cm.delete(api)),
             ("rename", lambda: cm.rename(api, "scratch/r.csv")), ("copy", lambda: cm.copy("scratch", "data/raw")),
             ("save policy", lambda: cm.save(model, "policies/server.yaml")),
             ("checkpoint", lambda: cm.create_checkpoint(api)),
             ("restore", lambda: cm.restore_checkpoint("checkpoint", api))]
    (project.scratch / "c.txt").write_text("c\n")
    calls[3] = ("copy", lambda: cm.copy("scratch/c.txt", "data/raw"))
    for name, call in calls:
        with pytest.raises(GuardForbidden) as info:
            await call()
        assert info.value.status_code == 403 and info.value.decision.rules, name
    assert _sha(raw) == before and not (project.raw / "c.txt").exists()
    assert not (project.raw / ".ipynb_checkpoints").exists()
    assert "overwritten" not in server_policy(project).read_text()
    await cm.save(model, "scratch/by-extension.txt")  # scratch: allowed
    assert (project.scratch / "by-extension.txt").read_text() == "overwritten\n"
    cm_records = [r for r in server_records(jp_serverapp) if r.get("via") == "contents_manager"]
    assert any(r["decision"] == "deny" and r["actor"] == "agent" and r["identity"]["username"] is None
               for r in cm_records)


async def test_agent_identity_and_events(jp_fetch: Any, jp_serverapp: Any, project: Workspace, audit: Path) -> None:
    """A named agent token: its decisions carry its identity; each one is a jupyter_events event; the
    server chain verifies."""
    seen: list[dict[str, Any]] = []

    async def listener(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        seen.append(data)

    jp_serverapp.event_logger.add_listener(schema_id=SCHEMA_ID, listener=listener)
    code, _ = await refused(jp_fetch("api", "contents", "data/warehouse.duckdb", method="DELETE",
                                        headers=auth(AGENT_TOKEN)))
    assert code == 403
    rec = [r for r in server_records(jp_serverapp) if r["kind"] == "file"][-1]
    assert rec["identity"] == {"username": "claude", "name": "claude", "agent": True} and rec["actor"] == "agent"
    for _ in range(50):  # listeners run as tasks
        if seen:
            break
        await asyncio.sleep(0.05)
    assert any(e["kind"] == "file" and e["decision"] == "deny" and e["username"] == "claude" for e in seen)
    head = server_records(jp_serverapp)[0]
    assert head["kind"] == "session" and head["role"] == "server"
    result = verify(chain_path(jp_serverapp))
    assert result.ok, result
