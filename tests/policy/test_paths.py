"""Path globs and real-path resolution (table-driven)."""

from __future__ import annotations

import os

import pytest

from guard_kernel.policy.paths import PathGlob, glob_base, resolve

GLOBS = [
    # glob, path relative to root, matches
    ("scratch/**", "scratch/a.csv", True),
    ("scratch/**", "scratch/x/y/z.parquet", True),
    ("scratch/**", "scratch", True),
    ("scratch/**", "scratchy/a.csv", False),
    ("scratch/**", "data/a.csv", False),
    ("data/*.csv", "data/a.csv", True),
    ("data/*.csv", "data/sub/a.csv", False),
    ("data/**/*.csv", "data/a.csv", True),
    ("data/**/*.csv", "data/sub/deeper/a.csv", True),
    ("data/**/*.csv", "data/a.parquet", False),
    ("data/warehouse.duckdb", "data/warehouse.duckdb", True),
    ("data/warehouse.duckdb", "data/warehouse.duckdb.wal", False),
    ("data/raw/?.csv", "data/raw/a.csv", True),
    ("data/raw/?.csv", "data/raw/ab.csv", False),
    ("data/raw/[ab].csv", "data/raw/b.csv", True),
    ("data/raw/[!ab].csv", "data/raw/b.csv", False),
]


@pytest.mark.parametrize("glob,rel,expected", GLOBS)
def test_glob_matches(tmp_path, glob, rel, expected):
    root = str(tmp_path)
    g = PathGlob.make(glob, root)
    assert g.matches(resolve(rel, root)) is expected


@pytest.mark.parametrize("glob,base", [("data/raw/**", "data/raw"), ("a/b.csv", "a/b.csv"), ("*.csv", ""), ("x/*/y", "x")])
def test_glob_base(glob, base):
    assert glob_base(glob) == base


def test_symlink_resolves_to_target(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "scratch").mkdir()
    target = tmp_path / "data" / "src.csv"
    target.write_text("a\n1\n")
    link = tmp_path / "scratch" / "innocent.csv"
    link.symlink_to(target)
    scratch = PathGlob.make("scratch/**", str(tmp_path))
    source = PathGlob.make("data/*.csv", str(tmp_path))
    real = resolve("scratch/innocent.csv", str(tmp_path))
    assert real == os.path.realpath(target)
    assert source.matches(real) and not scratch.matches(real)


def test_symlinked_root_is_resolved(tmp_path):
    real_root = tmp_path / "real"
    (real_root / "scratch").mkdir(parents=True)
    alias = tmp_path / "alias"
    alias.symlink_to(real_root)
    g = PathGlob.make("scratch/**", str(alias))
    assert g.matches(resolve("scratch/x.csv", str(real_root)))
    assert g.matches(resolve("scratch/x.csv", str(alias)))


def test_resolve_fd(tmp_path):
    p = tmp_path / "f.txt"
    with open(p, "w") as f:
        assert resolve(f.fileno()) == os.path.realpath(p)
