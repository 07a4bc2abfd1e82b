"""Every module of the guard is the guard's own code, wherever it sits in the package tree.

The runtime hook judges an import only when the user's code started it; the guard's own modules
count as a library (their imports are not the user's) and the post-import hook as import
machinery.  A module moved to a new folder must stay recognised: these tests walk the tree.
"""

from __future__ import annotations

from pathlib import Path

import guard_kernel
from guard_kernel._package import PACKAGE, PACKAGE_DIR, is_own_module, package_path
from guard_kernel.enforce.ipython import extension
from guard_kernel.enforce.runtime import initiator

MODULES = sorted(Path(PACKAGE_DIR).rglob("*.py"))


def test_the_package_root_is_the_installed_package() -> None:
    assert PACKAGE == "guard_kernel"
    assert Path(PACKAGE_DIR) == Path(guard_kernel.__file__).resolve().parent
    assert len(MODULES) > 40  # the walk sees the whole tree, subpackages included


def test_every_guard_module_is_the_guards_own() -> None:
    not_own = [str(p) for p in MODULES
               if initiator._kind(str(p)) not in (initiator._LIBRARY, initiator._SKIP)]
    assert not_own == []


def test_the_post_import_hook_is_import_machinery() -> None:
    lazy = package_path("enforce", "lazy.py")
    assert Path(lazy).is_file()
    assert initiator._kind(lazy) == initiator._SKIP


def test_a_user_file_beside_the_project_is_the_users(tmp_path: Path) -> None:
    mine = tmp_path / "analysis.py"
    mine.write_text("import os\n")
    assert initiator._kind(str(mine)) == initiator._USER
    assert initiator._kind("<ipython-input-1-abc>") == initiator._USER


def test_unload_names_that_mean_the_guard() -> None:
    assert PACKAGE in extension._OWN_NAMES
    assert extension.__name__ in extension._OWN_NAMES  # %unload_ext of the module itself
    assert is_own_module("guard_kernel.enforce.ipython.extension") and not is_own_module("guard_kernelx")


def test_the_policy_data_files_are_read_from_the_package() -> None:
    for name in ("default_policy.yaml", "policy.schema.json"):
        assert Path(package_path("policy", name)).is_file()
