"""docs/policy-reference.md documents every key, action, effect and default; every YAML example in the docs loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from guard_kernel.decision import Effect
from guard_kernel.policy import Action, ActionClass, parse_policy, schema
from guard_kernel.tools.cases import load_cases

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "policy-reference.md"
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"^```yaml( cases)?\n(.*?)^```", re.M | re.S)
HEAD = "version: 1\nname: example\n"


def schema_keys() -> list[str]:
    """Every key the schema allows, as a dotted path (``rules[].where.path``, ``sources.<name>.duckdb``)."""
    defs = schema()["$defs"]
    out: list[str] = []

    def res(x: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in x:
            x = defs[x["$ref"].rsplit("/", 1)[-1]]
        return x

    def walk(x: dict[str, Any], path: str) -> None:
        x = res(x)
        for branch in x.get("oneOf", []):
            walk(branch, path)
        for k, v in x.get("properties", {}).items():
            p = f"{path}.{k}" if path else k
            out.append(p)
            walk(v, p)
        if isinstance(x.get("additionalProperties"), dict):
            walk(x["additionalProperties"], path + ".<name>")
        if isinstance(x.get("items"), dict):
            walk(x["items"], path + "[]")

    walk(schema(), "")
    return sorted(set(out))


def test_schema_keys_are_found() -> None:
    keys = schema_keys()
    assert {"version", "extends", "rules[].where.path", "sources.<name>.tables.<name>.deny_columns",
            "limits.max_rows.agent"} <= set(keys)


@pytest.mark.parametrize("key", schema_keys())
def test_every_schema_key_has_a_section_with_an_example(key: str) -> None:
    text = REFERENCE.read_text()
    m = re.search(rf"^### `{re.escape(key)}`\n(.*?)(?=^##)", text, re.M | re.S)
    assert m, f"docs/policy-reference.md has no section '### `{key}`'"
    assert "```yaml" in m.group(1), f"the section of {key} has no YAML example"


@pytest.mark.parametrize("name", [a.value for a in Action] + [e.value for e in Effect]
                         + [c.value for c in ActionClass])
def test_every_action_effect_and_default_has_a_row_with_an_example(name: str) -> None:
    rows = [line for line in REFERENCE.read_text().splitlines() if line.startswith(f"| `{name}` |")]
    assert rows, f"docs/policy-reference.md has no table row for `{name}`"
    assert rows[0].rstrip(" |").rsplit("|", 1)[-1].strip(), f"the row of {name} has no example"


def _examples() -> list[Any]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text())):
            line = doc.read_text()[: m.start()].count("\n") + 1
            out.append(pytest.param(bool(m.group(1)), m.group(2), id=f"{doc.name}:{line}-{i}"))
    return out


def test_the_docs_have_yaml_examples() -> None:
    assert len(_examples()) >= 40


@pytest.mark.parametrize("is_cases,text", _examples())
def test_yaml_example_loads_and_validates(tmp_path: Path, is_cases: bool, text: str) -> None:
    if is_cases:
        f = tmp_path / "cases.yaml"
        f.write_text(text)
        assert load_cases(str(f))
        return
    full = text if re.search(r"^version:", text, re.M) else HEAD + text
    parse_policy(full, "example.yaml", root=str(tmp_path))  # raises PolicyError with file:line: field: reason
