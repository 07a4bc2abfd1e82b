"""Policy files: parse, validate and build the model (:mod:`guard_kernel.policy.model`).

A policy that does not validate is refused with the file, the line, the field path and
the reason (:class:`~guard_kernel.policy.model.PolicyError`).  There is no fallback to
"allow": no policy file means the strict built-in default (``default_policy.yaml`` beside
this module).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from guard_kernel._package import PACKAGE, package_path
from guard_kernel.policy._yaml import yaml
from guard_kernel.policy.actions import ALL_ACTIONS, ActionClass, valid_action_pattern
from guard_kernel.policy.databases import parse_url
from guard_kernel.policy.model import (
    DEFAULT_MESSAGE,
    MESSAGE_FIELDS,
    AuditSettings,
    Limits,
    Policy,
    PolicyError,
    Rule,
    Source,
    SourceTable,
    Where,
)
from guard_kernel.policy.paths import PathGlob, resolve
from guard_kernel.policy.schema import quick_valid

# libyaml when it is there (policy loading sits on kernel start-up); same safe constructor
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, file: str) -> tuple[Any, yaml.Node | None]:
    """Parse once: the node tree (for line numbers) and the data built from it."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()
    return data, node


def _line_of(node: yaml.Node | None, path: Iterable[Any]) -> int | None:
    """The 1-based line of the value at *path* inside a composed YAML node tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _package_text(name: str) -> str:
    """A data file shipped in the package's ``policy/`` folder: read from disk (``importlib.resources``
    costs ~2 ms of start-up to import; it is the fallback for a zipped install)."""
    try:
        with open(package_path("policy", name), encoding="utf-8") as f:
            return f.read()
    except OSError:
        from importlib import resources

        return resources.files(f"{PACKAGE}.policy").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The policy JSON Schema shipped with the package."""
    data: dict[str, Any] = json.loads(_package_text("policy.schema.json"))
    return data


def _field_path(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(err: Any) -> tuple[list[Any], str]:
    """The field path and a plain reason for a jsonschema error (deepest useful branch)."""
    from jsonschema.exceptions import best_match

    if err.validator == "oneOf" and err.context:
        # pick the branch that fits the value's type: its error says what is really wrong
        depth = len(err.absolute_path)
        fitting = [e for e in err.context if not (e.validator == "type" and len(e.absolute_path) == depth)]
        return _describe(max(fitting, key=lambda e: len(e.absolute_path)) if fitting else best_match(err.context))
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        props = err.schema.get("properties", {})
        extra = sorted(set(err.instance) - set(props))
        if extra:
            allowed = ", ".join(sorted(props)) or "none"
            return [*path, extra[0]], f"unknown key {extra[0]!r} (allowed: {allowed})"
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        if missing:
            return [*path, missing[0]], f"required key {missing[0]!r} is missing"
    return path, err.message


def _validate(data: Any, node: yaml.Node | None, file: str) -> None:
    if not isinstance(data, dict):
        raise PolicyError(file, 1, "", "a policy must be a YAML mapping")
    if not quick_valid(data, schema()):  # only a policy with an error pays for importing jsonschema
        import jsonschema

        validator = jsonschema.Draft202012Validator(schema())
        errors = sorted(validator.iter_errors(data),
                        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
        if errors:
            path, reason = _describe(errors[0])
            raise PolicyError(file, _line_of(node, path), _field_path(path), reason)
    for i, rule in enumerate(data.get("rules") or []):
        for j, pat in enumerate(rule["actions"]):
            if not valid_action_pattern(pat):
                raise PolicyError(
                    file, _line_of(node, ["rules", i, "actions", j]), f"rules[{i}].actions[{j}]",
                    f"unknown action {pat!r}; known actions: {', '.join(ALL_ACTIONS)}",
                )
    seen: dict[str, int] = {}
    for i, rule in enumerate(data.get("rules") or []):
        if rule["id"] in seen:
            raise PolicyError(file, _line_of(node, ["rules", i, "id"]), f"rules[{i}].id",
                              f"duplicate rule id {rule['id']!r} (first at rules[{seen[rule['id']]}])")
        seen[rule["id"]] = i
    templates: list[tuple[list[Any], Any]] = [(["defaults", "message"], (data.get("defaults") or {}).get("message"))]
    templates += [(["rules", i, "message"], r.get("message")) for i, r in enumerate(data.get("rules") or [])]
    for path, text in templates:
        if text is None:
            continue
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        except ValueError as exc:
            raise PolicyError(file, _line_of(node, path), _field_path(path), f"bad message template: {exc}") from None
        if names - MESSAGE_FIELDS:
            raise PolicyError(file, _line_of(node, path), _field_path(path),
                              f"unknown placeholder(s) {sorted(names - MESSAGE_FIELDS)}; use {sorted(MESSAGE_FIELDS)}")


def _as_tuple(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    return (v,) if isinstance(v, str) else tuple(v)


def _database(s: dict[str, Any], node: yaml.Node | None, file: str, root: str, path: list[Any]) -> dict[str, Any]:
    """The database fields of a source with a ``url`` (none without one)."""
    if not s.get("url"):
        if s.get("dialect") or s.get("scratch_schemas"):
            raise PolicyError(file, _line_of(node, path), _field_path(path), "dialect and scratch_schemas need a url")
        return {}
    try:
        db = parse_url(s["url"], root)
    except ValueError as exc:
        raise PolicyError(file, _line_of(node, [*path, "url"]), _field_path([*path, "url"]), str(exc)) from None
    if db.password:
        raise PolicyError(file, _line_of(node, [*path, "url"]), _field_path([*path, "url"]),
                          "credentials are never stored in a policy: take the password from the environment "
                          "(PGPASSWORD, ~/.pgpass) or the connection call")
    if s.get("dialect", db.dialect) != db.dialect:
        raise PolicyError(file, _line_of(node, [*path, "dialect"]), _field_path([*path, "dialect"]),
                          f"the url is a {db.dialect} database")
    return {"url": db.shown, "dialect": db.dialect, "server": db.server, "sqlite": db.path,
            "scratch_schemas": tuple(x.lower() for x in s.get("scratch_schemas", ()))}


def _build(data: dict[str, Any], node: yaml.Node | None, file: str, sha: str, root: str) -> Policy:
    defaults = data.get("defaults") or {}
    rules = []
    for i, r in enumerate(data.get("rules") or []):
        w = r.get("where") or {}
        where = Where(
            paths=tuple(PathGlob.make(p, root) for p in _as_tuple(w.get("path"))),
            tables=tuple(t.lower() for t in _as_tuple(w.get("tables"))),
            columns=tuple(c.lower() for c in _as_tuple(w.get("columns"))),
            modules=_as_tuple(w.get("module")),
            commands=_as_tuple(w.get("command")),
            hosts=_as_tuple(w.get("host")),
            ports=tuple(int(p) for p in (w["port"] if isinstance(w.get("port"), list) else [w["port"]]))
            if w.get("port") is not None else (),
        )
        rules.append(Rule(
            id=r["id"], effect=r["effect"], actions=tuple(r["actions"]),
            actors=tuple(a for a in r.get("actors", ()) if a != "*"),
            environments=_as_tuple(r.get("environments")), where=where, mode=r.get("mode"),
            message=r.get("message"), hint=r.get("hint"), file=file,
            line=_line_of(node, ["rules", i]) or 0,
        ))
    sources = {}
    for name, s in (data.get("sources") or {}).items():
        tables = {
            t.lower(): SourceTable(t.lower(), frozenset(c.lower() for c in (spec or {}).get("deny_columns", ())),
                                   {c.lower(): m for c, m in ((spec or {}).get("mask_columns") or {}).items()})
            for t, spec in (s.get("tables") or {}).items()
        }
        sources[name] = Source(
            name=name, duckdb=resolve(s["duckdb"], root) if s.get("duckdb") else None, tables=tables,
            paths=tuple(PathGlob.make(p, root) for p in s.get("paths", ())),
            line=_line_of(node, ["sources", name]) or 0, file=file, **_database(s, node, file, root, ["sources", name]),
            spark_tables=tuple(t.lower().replace("`", "") for t in (s.get("spark") or {}).get("tables", ())),
            spark_databases=tuple(d.lower().replace("`", "") for d in (s.get("spark") or {}).get("databases", ())),
        )
    limits = data.get("limits") or {}
    max_rows = limits.get("max_rows", {"agent": 500, "human": 10000})
    if isinstance(max_rows, int):
        max_rows = {"agent": max_rows, "human": max_rows}
    else:
        max_rows = {"agent": 500, "human": 10000, **max_rows}
    applies = data.get("applies_to") or {}
    confine = data.get("confine") or {}
    defaults_line = _line_of(node, ["defaults"]) or 0 if "defaults" in data else 0
    defaults_at: dict[ActionClass, tuple[str, int]] = {c: (file, (_line_of(node, ["defaults", c.value]) or 0) if c.value in defaults else defaults_line)
                   for c in ActionClass if c is not ActionClass.NONE}
    return Policy(
        name=data["name"], file=file, sha256=sha, root=root, description=data.get("description", ""),
        mode=data.get("mode", "enforce"), lock=data.get("lock", True),
        defaults={c: defaults.get(c.value, "allow" if c is ActionClass.READ else "deny")
                  for c in ActionClass if c is not ActionClass.NONE},
        message=defaults.get("message", DEFAULT_MESSAGE), sources=sources,
        scratch=tuple(PathGlob.make(p, root) for p in data.get("scratch", ())),
        limits=Limits(max_rows=max_rows, on_exceed=limits.get("on_exceed", "truncate"),
                      display_rows=limits.get("display_rows", 50), display_bytes=limits.get("display_bytes", 100_000)),
        rules=tuple(rules), applies_to_environments=tuple(applies.get("environments", ())),
        applies_to_actors=tuple(applies.get("actors", ())), defaults_at=defaults_at,
        # YAML reads a bare `off` as false
        confine_mode="off" if confine.get("mode") is False else confine.get("mode", "best_effort"),
        confine_exec=confine.get("exec", "allow"),
        audit=AuditSettings(**(data.get("audit") or {})),
    )


def policy_root(data: dict[str, Any], file: str, root: str | None) -> str:
    """Where the policy's relative paths point: its own ``root:`` key (relative to the policy
    file's folder), else *root* as given, else the policy file's folder; a policy that is not a
    file (a string, the built-in default) uses the working directory."""
    folder = os.path.dirname(file) if os.path.isabs(file) else None
    if data.get("root"):
        return resolve(data["root"], folder)
    return resolve(root or folder or os.getcwd())


def parse_policy(text: str, file: str = "<string>", root: str | None = None) -> Policy:
    """Validate policy *text* and build the model; raise :class:`PolicyError` if it is wrong.

    Relative paths resolve as :func:`policy_root` says."""
    return _parse(text, file, root, ())


def _parse(text: str, file: str, root: str | None, chain: tuple[str, ...]) -> Policy:
    data, node = _compose(text, file)
    _validate(data, node, file)
    policy = _build(data, node, file, hashlib.sha256(text.encode()).hexdigest(), policy_root(data, file, root))
    if "extends" in data:
        policy = _extend(policy, data, node, root, chain)
    return policy


# ------------------------------------------------------------------ extends
# A policy may extend another (a file, relative to its own folder, or the built-in one): the
# child's keys are merged over the parent's — ``defaults``, ``sources``, ``limits`` and
# ``applies_to`` entry by entry, other keys replaced — and the rules are concatenated, parent's
# first (rule ids must not collide).  Each file is validated and built on its own, with its own
# line numbers and its own root; the SHA-256 covers the whole chain.

BUILTIN_NAMES = frozenset({"builtin", "builtin:default", "builtin-strict"})
"""What ``extends:`` may name instead of a file: the strict built-in default."""


def _parent_text(ref: str, child: str, line: int | None) -> tuple[str, str]:
    """The text and file name of the parent *ref* that *child* extends."""
    if ref in BUILTIN_NAMES:
        return _package_text(BUILTIN_POLICY_FILE), f"<builtin:{BUILTIN_POLICY_FILE}>"
    base = os.path.dirname(child) if os.path.isabs(child) else os.getcwd()
    path = os.path.abspath(os.path.join(base, os.path.expanduser(ref)))
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as exc:
        raise PolicyError(child, line, "extends",
                          f"cannot read the parent policy {path}: {exc.strerror}") from None


def _extend(child: Policy, data: dict[str, Any], node: yaml.Node | None, root: str | None,
            chain: tuple[str, ...]) -> Policy:
    """*child* (built from *data*) merged over the policy its ``extends:`` names."""
    line = _line_of(node, ["extends"])
    text, parent_file = _parent_text(data["extends"], child.file, line)
    seen = (*chain, child.file)
    if parent_file in seen:
        loop = " → ".join(os.path.basename(f) for f in (*seen, parent_file))
        raise PolicyError(child.file, line, "extends",
                          f"{parent_file} is already in the chain of parents: a cycle ({loop})")
    parent = _parse(text, parent_file, root, seen)
    return _merge(parent, child, data, node)


def _merge(parent: Policy, child: Policy, data: dict[str, Any], node: yaml.Node | None) -> Policy:
    ids = {r.id: r for r in parent.rules}
    for i, r in enumerate(child.rules):
        if r.id in ids:
            first = ids[r.id]
            raise PolicyError(child.file, _line_of(node, ["rules", i, "id"]), f"rules[{i}].id",
                              f"rule id {r.id!r} is already defined in {first.file}:{first.line}")
    set_defaults = data.get("defaults") or {}
    limits = data.get("limits") or {}
    max_rows = limits.get("max_rows", {})
    if isinstance(max_rows, int):
        max_rows = {"agent": max_rows, "human": max_rows}
    applies = data.get("applies_to") or {}
    sha = hashlib.sha256(f"{child.sha256}\n{parent.sha256}".encode()).hexdigest()
    return replace(
        child, sha256=sha,
        description=child.description if "description" in data else parent.description,
        mode=child.mode if "mode" in data else parent.mode,
        lock=child.lock if "lock" in data else parent.lock,
        defaults={**parent.defaults, **{c: v for c, v in child.defaults.items() if c.value in set_defaults}},
        defaults_at={**parent.defaults_at,
                     **{c: v for c, v in child.defaults_at.items() if c.value in set_defaults}},
        message=child.message if "message" in set_defaults else parent.message,
        sources={**parent.sources, **child.sources},
        scratch=child.scratch if "scratch" in data else parent.scratch,
        limits=Limits(max_rows={**parent.limits.max_rows, **max_rows},
                      on_exceed=limits.get("on_exceed", parent.limits.on_exceed),
                      display_rows=limits.get("display_rows", parent.limits.display_rows),
                      display_bytes=limits.get("display_bytes", parent.limits.display_bytes)),
        rules=parent.rules + child.rules,
        applies_to_environments=child.applies_to_environments if "environments" in applies
        else parent.applies_to_environments,
        applies_to_actors=child.applies_to_actors if "actors" in applies else parent.applies_to_actors,
        extends=(parent.file, *parent.extends),
        confine_mode=child.confine_mode if "confine" in data else parent.confine_mode,
        confine_exec=child.confine_exec if "confine" in data else parent.confine_exec,
        audit=child.audit if "audit" in data else parent.audit,
    )


def load_policy(path: str | os.PathLike[str], root: str | None = None) -> Policy:
    """Load and validate the policy file at *path* (relative paths: :func:`policy_root`)."""
    file = os.fspath(path)
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise PolicyError(file, None, "", f"cannot read policy file: {exc.strerror}") from None
    return parse_policy(text, os.path.abspath(file), root)


BUILTIN_POLICY_FILE = "default_policy.yaml"


def builtin_policy(root: str | None = None) -> Policy:
    """The strict built-in default, used when no policy file is named."""
    text = _package_text(BUILTIN_POLICY_FILE)
    return parse_policy(text, f"<builtin:{BUILTIN_POLICY_FILE}>", root)


__all__ = ["BUILTIN_NAMES", "BUILTIN_POLICY_FILE", "builtin_policy", "load_policy", "parse_policy", "policy_root",
           "schema"]
