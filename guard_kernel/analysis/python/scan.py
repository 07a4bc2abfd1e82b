"""What the static cell check looks for, and where: the vocabulary (calls and magics), the line pre-filter, the AST readers.

The vocabulary tables name the calls that clearly act on the world (DuckDB SQL methods,
dataframe writers, ``os``/``shutil`` file functions, ``subprocess``/``os.exec*`` commands,
network clients).  They live apart from the analyzer (:mod:`guard_kernel.analysis.python.analyze`) so
that adding a call is a one-line table change, and because the pre-filter is built from them.

Speed: IPython has already parsed the cell, so the analysis never re-parses.  A regex over
the cell's text finds the lines that mention an interesting name; only AST subtrees spanning
those lines are walked (:func:`collect_nodes`).  The small readers at the end take literals off
AST nodes (strings, arguments, dotted names, f-strings as SQL with placeholders) without
evaluating anything.
"""

from __future__ import annotations

import ast
import bisect
import re
import shlex
import types
from collections.abc import Iterable
from typing import Any

from guard_kernel.decision.request import Request
from guard_kernel.policy.actions import Action

# ----------------------------------------------------------------- vocabulary

SQL_METHODS = frozenset({"sql", "execute", "executemany", "query"})
"""DuckDB methods taking SQL text as their first argument."""

WRITER_METHODS = frozenset({
    "to_csv", "to_parquet", "to_json", "to_excel", "to_feather", "to_hdf", "to_pickle", "to_stata", "to_orc",
    "to_html", "to_latex", "to_markdown", "to_xml", "to_string", "to_numpy_file", "tofile",
    "write_csv", "write_parquet", "write_json", "write_ndjson", "write_ipc", "write_excel", "write_avro",
    "write_delta", "write_ipc_stream", "sink_csv", "sink_parquet", "sink_ipc", "sink_ndjson",
})
"""Dataframe / relation writer methods: ``export.dataframe`` when given a literal target."""
WRITER_PATH_KW = ("path_or_buf", "path", "buf", "excel_writer", "fname", "file", "file_name", "filename",
                   "target", "where", "destination")

EXPORT_FUNCS: dict[str, int] = {  # qualified function → index of its target argument
    "pandas.to_pickle": 1, "pyarrow.parquet.write_table": 1, "pyarrow.csv.write_csv": 1,
    "pyarrow.feather.write_feather": 1, "pyarrow.orc.write_table": 1, "numpy.save": 0, "numpy.savez": 0,
    "numpy.savez_compressed": 0, "numpy.savetxt": 0,
}
FILE_FUNCS: dict[str, tuple[tuple[Action, int], ...]] = {  # qualified function → (action, arg index)…
    "os.remove": ((Action.FILE_DELETE, 0),), "os.unlink": ((Action.FILE_DELETE, 0),),
    "os.rmdir": ((Action.FILE_DELETE, 0),), "os.removedirs": ((Action.FILE_DELETE, 0),),
    "os.truncate": ((Action.FILE_DELETE, 0),),
    "os.rename": ((Action.FILE_DELETE, 0), (Action.FILE_WRITE, 1)),
    "os.renames": ((Action.FILE_DELETE, 0), (Action.FILE_WRITE, 1)),
    "os.replace": ((Action.FILE_DELETE, 0), (Action.FILE_WRITE, 1)),
    "os.link": ((Action.FILE_WRITE, 1),), "os.symlink": ((Action.FILE_WRITE, 1),),
    "shutil.rmtree": ((Action.FILE_DELETE, 0),),
    "shutil.move": ((Action.FILE_DELETE, 0), (Action.FILE_WRITE, 1)),
    "shutil.copy": ((Action.FILE_WRITE, 1),), "shutil.copy2": ((Action.FILE_WRITE, 1),),
    "shutil.copyfile": ((Action.FILE_WRITE, 1),), "shutil.copytree": ((Action.FILE_WRITE, 1),),
}
PATH_METHODS: dict[str, tuple[Action, ...]] = {  # pathlib.Path method → actions on the receiver
    "write_text": (Action.FILE_WRITE,), "write_bytes": (Action.FILE_WRITE,), "touch": (Action.FILE_WRITE,),
    "unlink": (Action.FILE_DELETE,), "rmdir": (Action.FILE_DELETE,), "rename": (Action.FILE_DELETE,),
    "replace": (Action.FILE_DELETE,), "symlink_to": (Action.FILE_WRITE,), "hardlink_to": (Action.FILE_WRITE,),
}
SHELL_FUNCS: dict[str, int] = {  # qualified function → index of the command argument
    "os.system": 0, "os.popen": 0, "subprocess.run": 0, "subprocess.call": 0, "subprocess.check_call": 0,
    "subprocess.check_output": 0, "subprocess.Popen": 0, "subprocess.getoutput": 0,
    "subprocess.getstatusoutput": 0, "os.execv": 1, "os.execve": 1, "os.execvp": 1, "os.execvpe": 1,
    "os.execl": 1, "os.execlp": 1, "os.spawnv": 2, "os.spawnvp": 2, "os.spawnl": 2, "os.spawnlp": 2,
    "asyncio.create_subprocess_shell": 0, "asyncio.create_subprocess_exec": 0, "pty.spawn": 0,
}
NET_FUNCS = frozenset({
    "urllib.request.urlopen", "urllib.request.urlretrieve", "requests.get", "requests.post", "requests.put",
    "requests.patch", "requests.delete", "requests.head", "requests.options", "httpx.get", "httpx.post",
    "httpx.put", "httpx.patch", "httpx.delete", "httpx.head", "httpx.stream",
})
DEFAULT_ALIASES_OF_MODULES = {"pd": "pandas", "np": "numpy", "pq": "pyarrow.parquet", "pa": "pyarrow"}

_INTERESTING = (
    SQL_METHODS | WRITER_METHODS | set(PATH_METHODS)
    | {"open", "to_clipboard", "connect", "cursor", "Path", "PurePath", "PosixPath", "import", "__import__",
       "import_module", "system", "getoutput", "run_cell_magic", "run_line_magic", "popen", "Popen", "run",
       "call", "check_call", "check_output", "remove", "rmtree", "move", "copy", "copy2", "copyfile",
       "copytree", "link", "symlink", "truncate", "removedirs", "renames", "urlopen", "urlretrieve",
       "requests", "httpx", "create_connection", "save", "savez", "savez_compressed", "savetxt",
       "write_table", "write_feather", "spawn", "create_subprocess_shell", "create_subprocess_exec",
       "system_piped", "system_raw", "default_connection", "duplicate"}
    | {n.rsplit(".", 1)[1] for n in SHELL_FUNCS}
)


def _trie_regex(words: Iterable[str]) -> str:
    """An alternation of *words* factored by common prefixes: Python's re tries alternatives one by
    one at every position, so a trie fails in one step where a flat list would try them all."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


_HIT = re.compile(r"\b(?:" + _trie_regex(_INTERESTING) + r"|read_\w+)\b")
_FROM_AS = re.compile(r"\bfrom\s+[\w.]+\s+import\s+\(?([^\n)]*\bas\b[^\n)]*)")
_AS_NAME = re.compile(r"\bas\s+(\w+)")
WRITE_MODE = re.compile(r"[wax+]")
TIMEIT_OPTS = re.compile(r"^\s*(?:(?:-[tcqo]|-[nrp]\s*\d+)\s+)*")
_PLACEHOLDER = "__guard_p{}__"
_PLACEHOLDER_RE = re.compile(r"__guard_p\d+__", re.I)


# ------------------------------------------------------------------ magics

SCRIPT_MAGICS = frozenset({"bash", "sh", "script", "perl", "ruby", "python", "python2", "python3", "pypy",
                            "zsh", "system", "sx"})
PACKAGE_MAGICS = frozenset({"pip", "conda", "mamba", "micromamba", "uv"})
PYTHON_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
"""Magics whose argument or body is Python: analysed like the cell itself."""
DEFAULT_ALIASES = frozenset({"cat", "clear", "cp", "ldir", "less", "lf", "lk", "ll", "ls", "lx", "man", "mkdir",
                             "more", "mv", "rm", "rmdir"})
"""IPython's default shell aliases (``%rm`` …): every alias is a ``shell.exec``."""


def _magic_args(line: str) -> list[str]:
    """Shell-like words of a magic's argument line, options removed."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    return [w for w in words if not w.startswith("-")]


def magic_intent(name: str, line: str, body: str | None, *,
                 aliases: Iterable[str] = DEFAULT_ALIASES) -> tuple[Action, str, dict[str, Any]] | None:
    """What running magic *name* does, when it is a shell command or a file write.

    Returns (action, resource, extra request fields), or None for magics that do neither
    (``%time``, ``%pwd``, ``%who`` …).  File writes return the target path as written.
    """
    if body is not None:  # a cell magic
        if name in ("system", "sx"):
            return Action.SHELL_EXEC, (body.strip().splitlines() or [""])[0][:200], {"command": body}
        if name in SCRIPT_MAGICS:
            prog = line.strip() if name == "script" else (name + " " + line).strip()
            cmd = f"{prog}\n{body}"
            return Action.SHELL_EXEC, f"%%{prog}: " + (body.strip().splitlines() or [""])[0][:160], {"command": cmd}
        if name in ("writefile", "file"):
            args = _magic_args(line)
            return (Action.FILE_WRITE, args[0], {}) if args else None
        return None
    if name in ("system", "sx"):
        return Action.SHELL_EXEC, line.strip()[:200], {"command": line.strip()}
    if name in PACKAGE_MAGICS:
        cmd = f"{name} {line}".strip()
        return Action.SHELL_EXEC, cmd[:200], {"command": cmd}
    if name in aliases:
        cmd = f"{name} {line}".strip()
        return Action.SHELL_EXEC, cmd[:200], {"command": cmd}
    args = _magic_args(line)
    if name == "save" and args:
        fname = args[0]
        if not fname.endswith((".py", ".ipy")):
            fname += ".ipy" if "-r" in line.split() else ".py"
        return Action.FILE_WRITE, fname, {}
    if name == "logstart":
        return Action.FILE_WRITE, args[0] if args else "ipython_log.py", {}
    if name == "notebook" and args:
        return Action.FILE_WRITE, args[0], {}
    if name == "store":
        if ">" in line:
            target = line.split(">")[-1].strip()
            return (Action.FILE_WRITE, target, {}) if target else None
        words = line.split()
        if not words or words[0] == "-r" or (words[0] == "-d" and len(words) == 1):
            return None  # listing or restoring: nothing is written
        return Action.FILE_WRITE, "<ipython db>", {}
    return None


# ------------------------------------------------------------------ analysis


def hit_lines(source: str) -> list[int]:
    """Sorted 1-based line numbers that mention an interesting name (or a name imported under an alias)."""
    out = _lines_matching(_HIT, source)
    aliases = _FROM_AS.findall(source) if " as " in source and "from" in source else None
    if aliases:  # "from os import remove as rm": calls of rm are interesting too
        names = {a for group in aliases for a in _AS_NAME.findall(group)}
        if names:
            extra = re.compile(r"\b(?:" + "|".join(sorted(names)) + r")\b")
            out = sorted(set(out).union(_lines_matching(extra, source)))
    return out


def _lines_matching(pattern: re.Pattern[str], source: str) -> list[int]:
    out: list[int] = []
    line, pos = 1, 0
    for m in pattern.finditer(source):
        line += source.count("\n", pos, m.start())
        pos = m.start()
        if not out or out[-1] != line:
            out.append(line)
    return out


_LEAVES = (ast.Name, ast.Constant, ast.expr_context, ast.operator, ast.cmpop, ast.unaryop, ast.boolop)


def collect_nodes(root: ast.AST, hits: list[int] | None) -> tuple[list[ast.Call], list[ast.AST], list[ast.AST]]:
    """Calls, imports and assignments under *root*, skipping subtrees that span no hit line."""
    calls: list[ast.Call] = []
    imports: list[ast.AST] = []
    binds: list[ast.AST] = []
    n = len(hits) if hits is not None else 0
    stack: list[ast.AST] = [root]
    body = getattr(root, "body", None)
    if hits is not None and type(body) is list and body:
        # top level: jump straight to the statements holding a hit line instead of testing each one
        starts = [st.decorator_list[0].lineno if getattr(st, "decorator_list", None) else st.lineno
                  for st in body]
        picked: dict[int, None] = {}
        for h in hits:
            i = bisect.bisect_right(starts, h) - 1
            if i >= 0 and (body[i].end_lineno or starts[i]) >= h:
                picked[i] = None
        stack = [body[i] for i in sorted(picked, reverse=True)]
    push, pop = stack.append, stack.pop
    AST, leaves, bisect_left = ast.AST, _LEAVES, bisect.bisect_left
    Call, Import, ImportFrom = ast.Call, ast.Import, ast.ImportFrom
    bind_types = (ast.Assign, ast.withitem, ast.AnnAssign)
    while stack:
        node = pop()
        t = type(node)
        if t is Call:
            calls.append(node)  # type: ignore[arg-type]
        elif t is Import or t is ImportFrom:
            imports.append(node)
            continue
        elif t in bind_types:
            binds.append(node)
        for name in node._fields:
            v = getattr(node, name, None)
            children = v if type(v) is list else (v,)
            for c in children:
                if not isinstance(c, AST) or isinstance(c, leaves):
                    continue
                if hits is not None:
                    lo = getattr(c, "lineno", None)
                    if lo is not None:
                        i = bisect_left(hits, lo)
                        if i == n or hits[i] > (c.end_lineno or lo):  # type: ignore[attr-defined]
                            continue
                push(c)
    return calls, imports, binds


def dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` → ['a', 'b', 'c'] for a chain of names, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def literal_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def call_arg(call: ast.Call, index: int, *names: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg in names:
            return kw.value
    if index < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
        return call.args[index]
    return None


BUILTIN_NAMES = frozenset({"open", "__import__", "exec", "eval", "compile"})


def qualname_of(value: Any) -> str | None:
    """The qualified name of a module / function / class from the user namespace."""
    if isinstance(value, types.ModuleType):
        name = value.__name__
        return {"posix": "os", "posixpath": "os.path", "_duckdb": "duckdb"}.get(name, name)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
        mod = getattr(value, "__module__", None) or ""
        mod = {"posix": "os", "io": "builtins", "_io": "builtins", "pathlib._local": "pathlib"}.get(mod, mod)
        qn = getattr(value, "__qualname__", None) or getattr(value, "__name__", "")
        return f"{mod}.{qn}" if mod else qn
    return None


def is_get_ipython(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get_ipython"
            and not node.args)


def sql_text(node: ast.AST | None) -> tuple[str | None, bool]:
    """SQL text of a literal or an f-string (placeholders as identifiers); (None, False) if unknown."""
    s = literal_str(node)
    if s is not None:
        return s, False
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        k = 0
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            else:
                parts.append(_PLACEHOLDER.format(k))
                k += 1
        return "".join(parts), k > 0
    return None, False


def mentions_placeholder(req: Request) -> bool:
    texts = [req.resource, req.path or ""] + [str(t) for t in req.tables + req.written]
    return any(_PLACEHOLDER_RE.search(t) for t in texts)


def is_duckdb_type(t: type, name: str) -> bool:
    """Whether *t* is (a subclass of) DuckDB's class *name* — checked by name: no import of duckdb."""
    return any(k.__name__ == name and k.__module__.startswith(("duckdb", "_duckdb")) for k in t.__mro__)
