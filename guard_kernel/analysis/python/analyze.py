"""Static analysis of Python cell code: what a cell clearly does, decided before any line of it runs.

:class:`_Analyzer` walks the calls, imports and assignments the pre-filter of
:mod:`guard_kernel.analysis.python.scan` picked out, resolves names (``import os as o``, connections bound
in the cell, literal ``Path`` objects) and turns each clear action into an :class:`Intent`:
literal SQL on DuckDB objects (through :mod:`guard_kernel.analysis.sql.requests`), literal paths, literal
commands, URLs, imports, and the bodies of Python magics (``%%time``, ``%timeit``).  It only
reports what is *clear* from the code and leaves everything dynamic to the runtime layers
(DuckDB gate, dataframe writers, audit hook): a false denial here costs a working cell, a
miss costs nothing the runtime does not catch.  Deciding the intents and rejecting the cell
is :mod:`guard_kernel.enforce.ipython.cell`'s job.
"""

from __future__ import annotations

import ast
import os
import shlex
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from guard_kernel.analysis.python.scan import (
    BUILTIN_NAMES,
    DEFAULT_ALIASES,
    DEFAULT_ALIASES_OF_MODULES,
    EXPORT_FUNCS,
    FILE_FUNCS,
    NET_FUNCS,
    PATH_METHODS,
    PYTHON_MAGICS,
    SHELL_FUNCS,
    SQL_METHODS,
    TIMEIT_OPTS,
    WRITE_MODE,
    WRITER_METHODS,
    WRITER_PATH_KW,
    call_arg,
    collect_nodes,
    dotted,
    hit_lines,
    is_duckdb_type,
    is_get_ipython,
    literal_str,
    magic_intent,
    mentions_placeholder,
    qualname_of,
    sql_text,
)
from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import resolve

if TYPE_CHECKING:
    from guard_kernel.policy.model import Policy


class SessionFacts(Protocol):
    """What the analysis reads of a session: the session's :class:`~guard_kernel.decision.guard.Guard`,
    or the pre-flight's stand-in (:mod:`guard_kernel.tools.preflight`), which executes nothing."""

    policy: Policy
    owned_tables: set[str]
    """Lower-case ``catalog.name`` and ``name`` of tables the session created."""
    owned_files: set[str]
    """Real paths of files the session created."""


@dataclass(frozen=True)
class Intent:
    """One thing a cell clearly means to do: the decision request and where it came from."""

    request: Request
    kind: str
    """Audit kind: ``sql``, ``file``, ``export``, ``shell``, ``net``, ``import``."""
    via: str = ""
    """The call that carries it (``con.execute``, ``open``, ``%%bash`` …)."""


@dataclass
class _Bindings:
    """What names in the cell stand for, as far as the code says."""

    modules: dict[str, str] = field(default_factory=dict)
    """name → qualified module or function (``pq`` → ``pyarrow.parquet``)."""
    duckdb: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """names assigned a DuckDB connection or cursor in the cell → which database (see ``conn_of``)."""
    paths: dict[str, str] = field(default_factory=dict)
    """names assigned a literal ``Path(…)`` in the cell."""


@dataclass
class CellState:
    """What earlier cells bound, carried into the next one when there is no live namespace (a
    notebook checked before it runs): connections, literal paths, module names, tables created."""

    bindings: _Bindings = field(default_factory=_Bindings)
    owned_tables: set[str] = field(default_factory=set)
    """Lower-case ``catalog.name`` and ``name`` of the tables earlier cells created."""


# ------------------------------------------------------------------ analysis


def _default_transform(code: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return str(TransformerManager().transform_cell(code))


class _Analyzer:
    """One pass over one cell (or a magic's body inside it)."""

    def __init__(self, *, source: str | None, first_line: int, namespace: Mapping[str, Any] | None,
                 guard: SessionFacts | None, aliases: Iterable[str] | None,
                 transform: Callable[[str], str] | None, depth: int = 0, display: str | None = None,
                 db_path: str | None = None) -> None:
        self.db_path = db_path
        self.lines = source.splitlines() if source is not None else None
        if display is not None and self.lines is not None:
            shown = display.splitlines()
            if len(shown) >= len(self.lines):  # IPython keeps line numbers: show what the user typed
                self.lines = shown
        self.first_line = first_line
        self.ns = namespace
        self.guard = guard
        self.aliases = frozenset(aliases) if aliases is not None else DEFAULT_ALIASES
        self.transform = transform or _default_transform
        self.depth = depth
        self.b = _Bindings()
        self.out: list[Intent] = []
        self.owned_sql: set[str] = set(guard.owned_tables) if guard is not None else set()
        self.catalogs: dict[str, str | None] = {}
        self.catalog_paths: dict[str, str] = {}
        self.detached: set[str] = set()
        """Catalog aliases this cell detached (before any statement that follows)."""
        self.uses: dict[tuple[str, Any], str] = {}
        """Connection key → the catalog a USE in this cell made its default."""
        self.macros: dict[tuple[str, Any], tuple[set[str], set[str]]] = {}
        """Connection key → (table macros this cell created, macros it dropped) on it."""

    # ------------------------------------------------------------- plumbing
    def code_of(self, node: ast.AST) -> str:
        ln = getattr(node, "lineno", None)
        if self.lines is not None and ln is not None and 0 < ln <= len(self.lines):
            return str(self.lines[ln - 1]).strip()
        try:
            return ast.unparse(node)[:200]
        except Exception:  # pragma: no cover - unparse of a valid tree does not fail
            return ""

    def line_of(self, node: ast.AST) -> int | None:
        ln = getattr(node, "lineno", None)
        return None if ln is None else ln + self.first_line - 1

    def add(self, node: ast.AST, kind: str, via: str, action: Action, resource: str, **kw: Any) -> None:
        req = Request(action, resource, line=self.line_of(node), code=self.code_of(node), **kw)
        self.out.append(Intent(req, kind, via))

    def add_path(self, node: ast.AST, kind: str, via: str, action: Action, target: str) -> None:
        if "://" in target and not target.startswith("file://"):
            scheme = target.split("://", 1)[0].lower()
            if scheme in ("http", "https", "ftp") and action is not Action.EXPORT_DATAFRAME:
                self.add(node, "net", via, Action.NET_CONNECT, target, host=urlsplit(target).hostname)
            else:
                self.add(node, kind, via, action, target)
            return
        real = resolve(target[7:] if target.startswith("file://") else target)
        owned = self.guard is not None and real in self.guard.owned_files
        self.add(node, kind, via, action, target, path=real, owned=owned)

    # ------------------------------------------------------------ resolution
    def qualify(self, node: ast.AST) -> str | None:
        """The qualified name a call target stands for (``o.remove`` → ``os.remove``)."""
        parts = dotted(node)
        if not parts:
            return None
        head = parts[0]
        if head in self.b.modules:
            base = self.b.modules[head]
        elif self.ns is not None and head in self.ns:
            base = qualname_of(self.ns[head]) or head
        elif head in BUILTIN_NAMES:
            base = "builtins." + head
        else:
            base = DEFAULT_ALIASES_OF_MODULES.get(head, head)
        return ".".join([base, *parts[1:]])

    def is_duckdb(self, node: ast.AST) -> bool:
        """Whether *node* clearly evaluates to the duckdb module, a connection or a cursor."""
        return self.conn_of(node) is not None

    def conn_of(self, node: ast.AST) -> tuple[str, Any] | None:
        """Which DuckDB connection *node* is: ("ns", object or None for the default connection),
        ("path", real database path or None for memory), ("unknown", None); None if not DuckDB."""
        if isinstance(node, ast.Name):
            if node.id in self.b.duckdb:
                return self.b.duckdb[node.id]
            if node.id in self.b.modules:
                return ("ns", None) if self.b.modules[node.id] in ("duckdb", "_duckdb") else None
            if self.ns is not None and node.id in self.ns:
                v = self.ns[node.id]
                if isinstance(v, types.ModuleType):
                    return ("ns", None) if v.__name__ in ("duckdb", "_duckdb") else None
                return ("ns", v) if is_duckdb_type(type(v), "DuckDBPyConnection") else None
            return ("ns", None) if node.id == "duckdb" and self.ns is None else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, owner = node.func.attr, node.func.value
            if attr in ("cursor", "duplicate"):
                return self.conn_of(owner)
            if attr == "default_connection" and self.conn_of(owner) is not None:
                return ("ns", None)
            if attr == "connect" and (self.conn_of(owner) is not None or self.qualify(node.func) == "duckdb.connect"):
                db = call_arg(node, 0, "database")
                if db is None:
                    return ("path", None)
                text = literal_str(db)
                if text is None:
                    return ("unknown", None)
                if not text or text.startswith(":memory:") or "://" in text or text.startswith("md:"):
                    return ("path", None)
                return ("path", resolve(text))
        return None

    def sql_context(self, sql: Any, conn: tuple[str, Any] | None, key: tuple[str, Any] | None = None) -> Any:
        """The SqlContext of *conn* (*key*: :func:`_conn_key`), with the catalogs and tables this
        cell attached, detached, used or created so far."""
        base = None
        kind, value = conn if conn is not None else ("unknown", None)
        if kind == "ns":  # a connection object in the user's namespace: the gate knows its catalogs
            gate = sys.modules.get("guard_kernel.enforce.duckdb.gate")  # looked up, not imported: the gate may be absent
            if gate is not None:
                base = gate.context(value)
        if base is None:
            base = sql.SqlContext(root=os.getcwd(),
                                  source_paths=sql.source_paths(self.guard.policy) if self.guard is not None else {})
            if kind == "path" and value:  # duckdb.connect('file.duckdb') in this cell
                alias = os.path.basename(value).split(".", 1)[0].lower()
                base = replace(base, catalogs={alias: _source_of(self.guard, value)}, default_catalog=alias,
                               catalog_paths={alias: value})
        gone, key = self.detached, key or _conn_key(conn, None)
        made, dropped = self.macros.get(key, (set(), set()))
        return replace(base, catalogs={k: v for k, v in {**base.catalogs, **self.catalogs}.items() if k not in gone},
                       macros=(base.macros - dropped) | made,
                       catalog_paths={k: v for k, v in {**base.catalog_paths, **self.catalog_paths}.items()
                                      if k not in gone},
                       default_catalog=self.uses.get(key, base.default_catalog),
                       owned_tables=frozenset(base.owned_tables) | self.owned_sql)

    def literal_path(self, node: ast.AST | None) -> str | None:
        """A path written literally: ``"a"``, ``Path("a") / "b"``, ``os.path.join("a", "b")``, a Path name."""
        if node is None:
            return None
        s = literal_str(node)
        if s is not None:
            return s
        if isinstance(node, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in node.values):
            return "".join(str(v.value) for v in node.values)  # type: ignore[attr-defined]
        if isinstance(node, ast.Name) and node.id in self.b.paths:
            return self.b.paths[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left, right = self.literal_path(node.left), self.literal_path(node.right)
            if left is not None and right is not None and self.is_pathish(node.left):
                return right if right.startswith("/") else left.rstrip("/") + "/" + right
            return None
        if isinstance(node, ast.Call) and not node.keywords:
            q = self.qualify(node.func)
            if q in ("pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "os.path.join"):
                parts = [self.literal_path(a) for a in node.args]
                if not parts:
                    return None
                out = ""
                for p in parts:
                    if p is None:
                        return None
                    out = p if p.startswith("/") or not out else out.rstrip("/") + "/" + p
                return out
        return None

    def is_pathish(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.b.paths
        if isinstance(node, ast.BinOp):
            return self.is_pathish(node.left)
        return isinstance(node, ast.Call) and self.qualify(node.func) in (
            "pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath")

    # -------------------------------------------------------------- the pass
    def run(self, tree: ast.AST, hits: list[int] | None) -> list[Intent]:
        calls, imports, binds = collect_nodes(tree, hits)
        for node in sorted(imports, key=lambda n: n.lineno):  # type: ignore[attr-defined]
            self.on_import(node)
        for node in sorted(binds, key=lambda n: getattr(n, "lineno", 0)):
            self.on_bind(node)
        for call in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
            self.on_call(call)
        self.out.sort(key=lambda i: i.request.line or 0)  # stable: source order within a line
        return self.out

    def on_import(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                self.b.modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                self.add(node, "import", "import", Action.PYTHON_IMPORT, a.name, module=a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name != "*":
                    self.b.modules[a.asname or a.name] = f"{node.module}.{a.name}"
            self.add(node, "import", "from-import", Action.PYTHON_IMPORT, node.module, module=node.module)

    def on_bind(self, node: ast.AST) -> None:
        target: ast.expr | None
        value: ast.expr | None
        if isinstance(node, ast.withitem):
            target, value = node.optional_vars, node.context_expr
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        else:
            return
        if not isinstance(target, ast.Name) or value is None:
            return
        if self.is_duckdb(value) and isinstance(value, ast.Call):
            self.b.duckdb[target.id] = self.conn_of(value)  # type: ignore[assignment]
        elif self.is_pathish(value):
            p = self.literal_path(value)
            if p is not None:
                self.b.paths[target.id] = p

    def on_call(self, call: ast.Call) -> None:
        func = call.func
        q = self.qualify(func)
        method = func.attr if isinstance(func, ast.Attribute) else None
        recv = func.value if isinstance(func, ast.Attribute) else None
        if method in SQL_METHODS and recv is not None and self.is_duckdb(recv):
            self.on_sql(call, q or method)
            return
        if method == "query" and recv is not None and self.is_relation(recv):
            self.on_sql(call, "relation.query", index=1)
            return
        if recv is not None and is_get_ipython(recv) and method is not None:
            self.on_ipython(call, method)
            return
        if q is not None:
            if q in ("builtins.open", "io.open", "codecs.open"):
                self.on_open(call, q)
                return
            if q in FILE_FUNCS:
                for action, i in FILE_FUNCS[q]:
                    p = self.literal_path(call_arg(call, i, "src" if i == 0 else "dst", "path"))
                    if p is not None:
                        self.add_path(call, "file", q, action, p)
                return
            if q in SHELL_FUNCS:
                self.on_shell_call(call, q, SHELL_FUNCS[q])
                return
            if q in EXPORT_FUNCS:
                p = self.literal_path(call_arg(call, EXPORT_FUNCS[q], "where", "path", "file", "fname", "filepath_or_buffer"))
                if p is not None:
                    self.add_path(call, "export", q, Action.EXPORT_DATAFRAME, p)
                return
            if q in NET_FUNCS or q == "requests.request" or q == "socket.create_connection":
                self.on_net(call, q)
                return
            if q in ("builtins.__import__", "importlib.import_module"):
                mod = literal_str(call_arg(call, 0, "name"))
                if mod:
                    self.add(call, "import", q, Action.PYTHON_IMPORT, mod, module=mod)
                return
            if q.startswith("pandas.read_") or q.startswith("polars.read_"):
                url = literal_str(call_arg(call, 0, "filepath_or_buffer", "path", "io", "source"))
                if url and url.split("://", 1)[0].lower() in ("http", "https", "ftp"):
                    self.add(call, "net", q, Action.NET_CONNECT, url, host=urlsplit(url).hostname)
                return
        if method is None or recv is None:
            return
        if method in WRITER_METHODS:
            p = self.literal_path(call_arg(call, 0, *WRITER_PATH_KW))
            if p is not None:
                self.add_path(call, "export", method, Action.EXPORT_DATAFRAME, p)
        elif method == "to_clipboard":
            self.add(call, "export", method, Action.EXPORT_CLIPBOARD, "clipboard")
        elif method in PATH_METHODS or method == "open":
            self.on_path_method(call, method, recv)
        elif method == "connect" and call.args and isinstance(call.args[0], ast.Tuple):
            elts = call.args[0].elts
            host = literal_str(elts[0]) if elts else None
            if host is not None and len(elts) == 2 and isinstance(elts[1], ast.Constant):
                self.add(call, "net", "socket.connect", Action.NET_CONNECT, f"{host}:{elts[1].value!s}", host=host)

    def is_relation(self, node: ast.AST) -> bool:
        if self.ns is None or not isinstance(node, ast.Name) or node.id not in self.ns:
            return False
        return is_duckdb_type(type(self.ns[node.id]), "DuckDBPyRelation")

    # -------------------------------------------------------------- handlers
    def on_open(self, call: ast.Call, via: str) -> None:
        path = self.literal_path(call_arg(call, 0, "file", "filename"))
        mode = call_arg(call, 1, "mode")
        mode_s = "r" if mode is None else literal_str(mode)
        if path is not None and mode_s is not None and WRITE_MODE.search(mode_s):
            self.add_path(call, "file", via, Action.FILE_WRITE, path)

    def on_path_method(self, call: ast.Call, method: str, recv: ast.AST) -> None:
        if not self.is_pathish(recv):
            return
        path = self.literal_path(recv)
        if path is None:
            return
        if method == "open":
            mode = literal_str(call_arg(call, 0, "mode")) if (call.args or call.keywords) else "r"
            if mode is not None and WRITE_MODE.search(mode):
                self.add_path(call, "file", "Path.open", Action.FILE_WRITE, path)
            return
        for action in PATH_METHODS[method]:
            self.add_path(call, "file", f"Path.{method}", action, path)
        if method in ("rename", "replace"):
            target = self.literal_path(call_arg(call, 0, "target"))
            if target is not None:
                self.add_path(call, "file", f"Path.{method}", Action.FILE_WRITE, target)

    def on_shell_call(self, call: ast.Call, via: str, index: int) -> None:
        node = call_arg(call, index, "args", "cmd", "command", "program")
        if isinstance(node, (ast.List, ast.Tuple)):
            words = [literal_str(e) for e in node.elts]
            if not words or any(w is None for w in words):
                return
            cmd = shlex.join(w for w in words if w is not None)
        elif via.startswith(("os.exec", "os.spawn", "asyncio.create_subprocess_exec")):
            words = [literal_str(a) for a in call.args[index:]]
            if not words or any(w is None for w in words):
                return
            cmd = shlex.join(w for w in words if w is not None)
        else:
            s = literal_str(node)
            if s is None:
                return
            cmd = s
        self.add_shell(call, via, cmd)

    def add_shell(self, node: ast.AST, via: str, cmd: str) -> None:
        first = cmd.strip().splitlines()[0] if cmd.strip() else cmd
        self.add(node, "shell", via, Action.SHELL_EXEC, first[:200], command=cmd)

    def on_net(self, call: ast.Call, via: str) -> None:
        if via == "socket.create_connection":
            addr = call_arg(call, 0, "address")
            if isinstance(addr, ast.Tuple) and addr.elts and literal_str(addr.elts[0]):
                host = literal_str(addr.elts[0])
                self.add(call, "net", via, Action.NET_CONNECT, str(host), host=host)
            return
        url = literal_str(call_arg(call, 1 if via == "requests.request" else 0, "url"))
        if url and "://" in url:
            self.add(call, "net", via, Action.NET_CONNECT, url, host=urlsplit(url).hostname)

    def on_ipython(self, call: ast.Call, method: str) -> None:
        if method in ("system", "system_piped", "system_raw", "getoutput"):
            cmd = literal_str(call_arg(call, 0, "cmd"))
            if cmd is not None:
                self.add_shell(call, "!" if method != "getoutput" else "!!", cmd)
        elif method == "run_line_magic":
            name, line = literal_str(call_arg(call, 0, "magic_name")), literal_str(call_arg(call, 1, "line"))
            if name is not None and line is not None:
                self.on_magic(call, name, line, None)
        elif method == "run_cell_magic":
            name, line, body = (literal_str(call_arg(call, 0, "magic_name")), literal_str(call_arg(call, 1, "line")),
                                literal_str(call_arg(call, 2, "cell")))
            if name is not None and line is not None and body is not None:
                self.on_magic(call, name, line, body)

    def on_magic(self, call: ast.AST, name: str, line: str, body: str | None) -> None:
        """A magic as IPython rewrote it: ``run_line_magic(name, line)`` / ``run_cell_magic``."""
        intent = magic_intent(name, line, body, aliases=self.aliases)
        if intent is not None:
            action, resource, extra = intent
            if action is Action.FILE_WRITE:
                if resource == "<ipython db>":
                    resource = self.db_path or resource
                self.add_path(call, "file", f"%{name}" if body is None else f"%%{name}", action, resource)
            else:
                self.add(call, "shell", f"%{name}" if body is None else f"%%{name}", action, resource, **extra)
            return
        if name in PYTHON_MAGICS and self.depth < 3:
            if body is not None:
                self.nested(body, (self.line_of(call) or 1) + 1)
            else:
                if name == "timeit":  # %timeit -n1 -r3 stmt: its options take numbers, the rest is Python
                    line = TIMEIT_OPTS.sub("", line, count=1)
                if not line.lstrip().startswith("-"):  # other options: leave the parsing to the magic
                    self.nested(line, self.line_of(call) or 1)

    def nested(self, code: str, first_line: int) -> None:
        try:
            src = self.transform(code)
            tree = ast.parse(src)
        except (SyntaxError, ValueError, TypeError):
            return  # Python reports it when the magic runs
        sub = _Analyzer(source=src, first_line=first_line, namespace=self.ns, guard=self.guard,
                        aliases=self.aliases, transform=self.transform, depth=self.depth + 1, db_path=self.db_path)
        sub.b = self.b
        self.out.extend(sub.run(tree, None))

    def on_sql(self, call: ast.Call, via: str, index: int = 0) -> None:
        sql = _sql_module()
        node = call_arg(call, index, "query", "sql", "sql_query")
        text, placeholders = sql_text(node)
        if text is None:
            return
        recv = call.func.value if isinstance(call.func, ast.Attribute) else None
        conn = self.conn_of(recv) if recv is not None else None
        key = _conn_key(conn, recv)
        for st in sql.analyze(text):
            if placeholders and st.action is Action.SQL_UNKNOWN:
                continue  # the shape depends on runtime values: the DuckDB gate decides
            ctx = self.sql_context(sql, conn, key)
            for req in sql.to_requests((st,), ctx, line=self.line_of(call)):
                if placeholders and mentions_placeholder(req):
                    continue
                self.out.append(Intent(req, "sql", via))
            for t in st.created:
                self.owned_sql.update({t.name, str(t)})
            if st.created_macros or st.dropped_macros:
                made, dropped = self.macros.setdefault(key, (set(), set()))
                made.difference_update(st.dropped_macros)
                dropped.update(st.dropped_macros)
                made.update(st.created_macros)
                dropped.difference_update(st.created_macros)
            att = st.attach
            if att is None or not att.alias:
                continue
            alias = att.alias.lower()
            if att.verb == "attach" and att.path:
                real = resolve(att.path)
                self.catalogs[alias] = _source_of(self.guard, real)
                self.catalog_paths[alias] = real
                self.detached.discard(alias)
            elif att.verb == "detach":
                self.catalogs.pop(alias, None)
                self.catalog_paths.pop(alias, None)
                self.detached.add(alias)
            elif att.verb == "use":  # later statements on this connection land in that catalog
                self.uses[key] = alias.split(".", 1)[0]


def _conn_key(conn: tuple[str, Any] | None, recv: ast.AST | None) -> tuple[str, Any]:
    """Which connection a USE applies to: the variable it is called on (two ``duckdb.connect()``
    of one cell are two connections), else the connection as :meth:`_Analyzer.conn_of` names it."""
    if isinstance(recv, ast.Name):
        return ("name", recv.id)
    kind, value = conn if conn is not None else ("unknown", None)
    return (kind, id(value)) if kind == "ns" and value is not None else (kind, value)


def _source_of(guard: SessionFacts | None, real: str) -> str | None:
    if guard is None:
        return None
    for src in guard.policy.sources.values():
        if src.duckdb and src.duckdb == real:
            return src.name
    return None


def _sql_module() -> Any:
    # imported on first use: sqlglot stays off the start-up path
    from guard_kernel.analysis.sql import requests as sql

    return sql


def analyze_tree(tree: ast.AST, source: str | None = None, *, first_line: int = 1,
                 namespace: Mapping[str, Any] | None = None, guard: SessionFacts | None = None,
                 aliases: Iterable[str] | None = None, transform: Callable[[str], str] | None = None,
                 display: str | None = None, db_path: str | None = None,
                 hits: list[int] | None = None, state: CellState | None = None) -> list[Intent]:
    """Intents of an already-parsed cell; *source* (its text) lets the pre-filter skip most of the tree.

    *display* is the cell as typed (before IPython's transforms), used for the code shown in denials.
    *hits* is the pre-filter's answer for an ASCII *source* when the caller has already computed it.
    *state* carries names and created tables from cell to cell (updated in place).
    """
    if source is None or not source.isascii():  # identifiers are NFKC-normalised: non-ASCII → walk all
        hits = None
    elif hits is None:
        hits = hit_lines(source)
    if hits is not None and not hits:
        return []
    a = _Analyzer(source=source, first_line=first_line, namespace=namespace, guard=guard, aliases=aliases,
                  transform=transform, display=display, db_path=db_path)
    if state is None:
        return a.run(tree, hits)
    a.b = state.bindings
    a.owned_sql |= state.owned_tables
    out = a.run(tree, hits)
    state.owned_tables |= a.owned_sql
    return out


def analyze_source(code: str, *, first_line: int = 1, namespace: Mapping[str, Any] | None = None,
                   guard: SessionFacts | None = None, aliases: Iterable[str] | None = None,
                   transform: Callable[[str], str] | None = None, display: str | None = None,
                   db_path: str | None = None, state: CellState | None = None) -> list[Intent]:
    """Intents of the Python source *code* (as IPython runs it); [] if it does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []  # Python reports it normally
    return analyze_tree(tree, code, first_line=first_line, namespace=namespace, guard=guard,
                        aliases=aliases, transform=transform, display=display, db_path=db_path, state=state)


analyze_cell = analyze_source
"""The name the team brief uses for :func:`analyze_source`."""
