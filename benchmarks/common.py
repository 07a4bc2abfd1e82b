"""Shared set-up: the policy, the in-process guard, the corpus and the child-process runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .harness import Config

CORPUS = os.path.join(os.path.dirname(__file__), "corpus", "statements.sql")
POLICY = os.path.join("policies", "default.yaml")


@dataclass(frozen=True)
class Statement:
    """One corpus statement."""

    name: str
    text: str

    @property
    def lines(self) -> int:
        return len(self.text.splitlines())

    @property
    def bucket(self) -> str:
        """Size class: ``simple`` (1–3 lines), ``medium`` (4–24), ``30-line`` (25–34), ``40-line`` (35–40)."""
        n = self.lines
        if n <= 3:
            return "simple"
        if n <= 24:
            return "medium"
        return "30-line" if n <= 34 else "40-line"


def load_corpus(path: str = CORPUS) -> list[Statement]:
    """The statements of *path*: each runs from a ``-- name:`` line to the next."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parts = re.split(r"^-- name: (\S+)[ \t]*\n", text, flags=re.M)[1:]
    return [Statement(name, body.strip()) for name, body in zip(parts[::2], parts[1::2], strict=True)]


def policy_path(cfg: Config) -> str:
    return os.path.join(cfg.root, POLICY)


def make_guard(cfg: Config, actor: str = "human") -> Any:
    """A guard under ``policies/default.yaml`` rooted in the work directory, quiet, auditing there."""
    from guard_kernel.decision.guard import Guard
    from guard_kernel.policy.load import load_policy

    os.makedirs(os.path.join(cfg.workdir, "scratch"), exist_ok=True)
    policy = load_policy(policy_path(cfg), root=cfg.workdir)
    return Guard(policy, actor=actor, audit_dir=os.path.join(cfg.workdir, "audit"), notify=lambda d: None)


def guard_env(cfg: Config, actor: str = "human") -> dict[str, str]:
    """Environment for a child process or kernel that builds its guard from ``GUARD_KERNEL_*``."""
    env = dict(os.environ)
    env.update({
        "GUARD_KERNEL_POLICY": policy_path(cfg),
        "GUARD_KERNEL_ACTOR": actor,
        "GUARD_KERNEL_AUDIT_DIR": os.path.join(cfg.workdir, "audit"),
        "GUARD_KERNEL_ROOT": cfg.workdir,
        "PYTHONPATH": os.pathsep.join(p for p in (cfg.root, env.get("PYTHONPATH", "")) if p),
    })
    return env


def run_child(cfg: Config, module: str, args: list[str], env: dict[str, str] | None = None,
              timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m <module> <args>`` in *cfg.workdir*; its last stdout line is a JSON object."""
    env = env or guard_env(cfg)
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cfg.workdir, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
