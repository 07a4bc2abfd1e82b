"""A quick JSON Schema check for the policy schema's keyword subset, so valid policies need no jsonschema import.

``import jsonschema`` costs ~35 ms (attrs, referencing, rpds, format checkers) — most of
``%load_ext``.  :func:`quick_valid` answers "valid" only where jsonschema (Draft 2020-12)
would; any error, and any keyword outside the subset it implements, answers "not known
valid", and the caller runs jsonschema, which finds and explains the error.  So a policy is
never accepted that jsonschema rejects; only the error path pays the import.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_SUBSET = frozenset({"$schema", "$id", "title", "description", "$defs", "$ref", "type", "enum", "const",
                     "properties", "additionalProperties", "required", "items", "minItems", "minLength",
                     "minimum", "oneOf", "pattern"})
_TYPES: dict[str, Any] = {  # jsonschema's type checker: a bool is no number, 1.0 is an integer
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


class _Unsupported(Exception):
    """The schema uses something this check does not implement: jsonschema decides."""


def _same(a: Any, b: Any) -> bool:
    """jsonschema's equality of scalars (``enum``/``const``): True is not 1, 1.0 is 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        raise _Unsupported("enum/const with a container")
    return bool(a == b)


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _fits(schema: Any, value: Any, root: dict[str, Any]) -> bool:
    if schema is True or schema is False:
        return bool(schema)
    if not isinstance(schema, dict) or not schema.keys() <= _SUBSET:
        raise _Unsupported(str(schema)[:80])
    ref = schema.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise _Unsupported(str(ref))
        if not _fits(root["$defs"][ref[len("#/$defs/"):]], value, root):
            return False
    kind = schema.get("type")
    if kind is not None:
        if not isinstance(kind, str) or kind not in _TYPES:
            raise _Unsupported(str(kind))
        if not _TYPES[kind](value):
            return False
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    if "oneOf" in schema and sum(_fits(s, value, root) for s in schema["oneOf"]) != 1:
        return False
    if isinstance(value, dict):
        if any(k not in value for k in schema.get("required", ())):
            return False
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        return all(_fits(props.get(k, extra) if isinstance(k, str) else extra, v, root) for k, v in value.items())
    if isinstance(value, list):
        return len(value) >= schema.get("minItems", 0) and (
            "items" not in schema or all(_fits(schema["items"], v, root) for v in value))
    if isinstance(value, str):
        return len(value) >= schema.get("minLength", 0) and (
            "pattern" not in schema or _regex(schema["pattern"]).search(value) is not None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "minimum" in schema:
        return bool(value >= schema["minimum"])
    return True


def quick_valid(data: Any, schema: dict[str, Any]) -> bool:
    """True only if *data* is valid under *schema* (Draft 2020-12); False means "ask jsonschema"."""
    try:
        return _fits(schema, data, schema)
    except (_Unsupported, KeyError, TypeError, re.error):
        return False


__all__ = ["quick_valid"]
