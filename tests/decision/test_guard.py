"""How a session gets its policy, actor and environment (GUARD_KERNEL_*), and applies_to."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard_kernel import Action, Request, read_records
from guard_kernel.decision import guard_from_env
from guard_kernel.policy import PolicyError

POLICY = """\
version: 1
name: envs
applies_to: {environments: [dev, ci], actors: [agent, human]}
defaults: {read: allow, write: deny, export: deny, network: deny, shell: deny}
scratch: ["scratch/**"]
rules:
  - id: ci-shell
    effect: allow
    environments: [ci]
    actions: [shell.exec]
  - id: dev-shell-warn
    effect: warn
    environments: [dev]
    actors: [human]
    actions: [shell.exec]
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "envs.yaml"
    p.write_text(POLICY)
    return p


def env_for(policy: Path | None, tmp_path: Path, **kw: str) -> dict[str, str]:
    env = {"GUARD_KERNEL_AUDIT_DIR": str(tmp_path / "audit")}
    if policy is not None:
        env["GUARD_KERNEL_POLICY"] = str(policy)
    env.update({f"GUARD_KERNEL_{k.upper()}": v for k, v in kw.items()})
    return env


SHELL = Request(Action.SHELL_EXEC, "make report", command="make report")

# (environment, actor, expected effect of a shell command)
CASES = [
    ("ci", "agent", "allow"),
    ("ci", "human", "allow"),
    ("dev", "human", "warn"),
    ("dev", "agent", "deny"),
]


@pytest.mark.parametrize("environment,actor,effect", CASES)
def test_rules_follow_environment_and_actor(policy_file, tmp_path, environment, actor, effect):
    g = guard_from_env(environ=env_for(policy_file, tmp_path, environment=environment, actor=actor))
    try:
        assert (g.environment, g.actor) == (environment, actor)
        d = g.check(SHELL, "test", enforce=False)
        assert d.effect.value == effect
        rec = [r for r in read_records(g.audit_path) if r["kind"] == "test"][-1]
        assert (rec["environment"], rec["actor"], rec["decision"]) == (environment, actor, effect)
    finally:
        g.close()


def test_policy_refused_outside_its_environments(policy_file, tmp_path):
    with pytest.raises(PolicyError) as e:
        guard_from_env(environ=env_for(policy_file, tmp_path, environment="prod"))
    assert e.value.field == "applies_to.environments" and "prod" in str(e.value)
    assert not (tmp_path / "audit").exists() or not any((tmp_path / "audit").iterdir())


def test_unknown_actor_refused(policy_file, tmp_path):
    with pytest.raises(PolicyError) as e:
        guard_from_env(environ=env_for(policy_file, tmp_path, actor="robot", environment="ci"))
    assert "robot" in str(e.value)


def test_defaults_without_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = guard_from_env(environ={})
    try:
        assert g.policy.name == "builtin-strict"
        assert (g.actor, g.environment) == ("human", "default")
        assert Path(g.audit_path).parent == tmp_path / ".guard_audit"
        first = next(read_records(g.audit_path))
        assert first["kind"] == "session" and first["policy"]["name"] == "builtin-strict"
    finally:
        g.close()


def test_default_actor_is_the_callers(policy_file, tmp_path):
    g = guard_from_env(default_actor="agent", environ=env_for(policy_file, tmp_path, environment="dev"))
    try:
        assert g.actor == "agent"
    finally:
        g.close()


def test_set_policy_checks_applies_to(policy_file, tmp_path):
    from guard_kernel.policy import parse_policy

    g = guard_from_env(environ=env_for(policy_file, tmp_path, environment="ci"))
    try:
        other = parse_policy(POLICY.replace("[dev, ci]", "[prod]"), "prod.yaml", str(tmp_path))
        with pytest.raises(PolicyError):
            g.set_policy(other)
        assert g.policy.name == "envs"
    finally:
        g.close()


EXITING = """
import sys
sys.path.insert(0, {repo!r})
from guard_kernel import Action, Request
from guard_kernel.decision.guard import guard_from_env
g = guard_from_env(environ={env!r})
g.check(Request(Action.SHELL_EXEC, "make report", command="make report"), "shell", enforce=False)
print(g.audit_path)
"""


def test_the_audit_file_is_ended_at_interpreter_exit(policy_file: Path, tmp_path: Path) -> None:
    """A kernel shut down without unloading the extension still ends its audit: session_end, no map tail."""
    import subprocess
    import sys

    from guard_kernel.audit import verify

    env = env_for(policy_file, tmp_path, environment="ci", actor="agent")
    code = EXITING.format(repo=str(Path(__file__).resolve().parents[2]), env=env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert b"\0" not in path.read_bytes()
    assert [r["kind"] for r in read_records(str(path))] == ["session", "shell", "session_end"]
    assert verify(str(path)).ok
