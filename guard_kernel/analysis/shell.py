"""What a shell command would change: the files its words name as write or delete targets.

A ``%load_ext`` session cannot confine the processes it starts (Landlock restricts the calling
thread; a running process cannot confine itself after the fact), so the shell wrappers ask
this module before ``!cmd``, ``%sx`` and ``%%bash`` run: every path a command would write,
delete, truncate or move is decided as that action, so ``!rm data/raw/regions.csv`` meets the
source's read-only protection like ``os.remove`` would.  Best effort, said so in the threat
model: it reads words, not shell semantics (variables, ``eval``, scripts and ``find -delete``
with computed paths get past it); in the guarded kernel Landlock holds instead.

Reading commands (``cat``, ``head``, ``wc``, ``grep``…) are not writes: they are left alone, so
ordinary looks at the data keep working.
"""

from __future__ import annotations

import os
import re
import shlex

from guard_kernel.policy.actions import Action
from guard_kernel.policy.paths import resolve

DELETES = frozenset({"rm", "rmdir", "unlink", "shred", "truncate"})
"""Commands whose every non-option argument is removed or cut."""
WRITES_ALL = frozenset({"touch", "tee", "chmod", "chown", "chgrp", "mkdir", "ln"})
"""Commands whose every non-option argument is (over)written or changed."""
WRITES_LAST = frozenset({"cp", "install", "rsync", "scp"})
"""Commands whose last argument is the target."""
MOVES = frozenset({"mv"})
"""Every argument of ``mv`` changes: its sources disappear, its target is written."""
IN_PLACE = {"sed": ("-i", "--in-place"), "perl": ("-i", "-pi"), "sort": ("-o",)}
"""Commands that write their file arguments only with one of these options."""
_SPLIT = re.compile(r"\|\||&&|[;|&\n]")
_REDIRECT = re.compile(r"(?:^|\s)\d*>>?\|?\s*([^\s;|&<>]+)")


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment, comments=True)
    except ValueError:  # an unbalanced quote: the shell will refuse it too; split plainly
        return segment.split()


VALUE_OPTIONS = {"truncate": ("-s", "-r", "--size", "--reference"), "install": ("-m", "-o", "-g"),
                 "chown": ("--from",), "tee": (), "cp": ("-t", "--target-directory"), "sort": ("-k", "-t")}
"""Options whose value is the next word (not a file)."""


def _args(words: list[str]) -> list[str]:
    takes_value = VALUE_OPTIONS.get(os.path.basename(words[0]), ())
    out, skip = [], False
    for w in words[1:]:
        if skip:
            skip = False
        elif w in takes_value:
            skip = True
        elif not w.startswith("-"):
            out.append(w)
    return out


def shell_writes(command: str, cwd: str | None = None) -> list[tuple[Action, str]]:
    """(action, real path) of every file *command* would write or delete, as far as its words say."""
    base = cwd or os.getcwd()
    out: list[tuple[Action, str]] = []

    def add(action: Action, word: str) -> None:
        if word and not word.startswith(("$", "`")) and word not in ("/dev/null", "-"):
            out.append((action, resolve(os.path.expanduser(word), base)))

    for target in _REDIRECT.findall(command):
        if not target.startswith("&"):
            add(Action.FILE_WRITE, target.strip("'\""))
    for segment in _SPLIT.split(command):
        words = _words(_REDIRECT.sub(" ", segment))
        while words and (("=" in words[0] and not words[0].startswith("-"))
                         or words[0] in ("sudo", "env", "command", "exec", "nohup", "time")):
            words = words[1:]  # VAR=x prefixes and wrappers: the program comes after them
        if not words:
            continue
        prog = os.path.basename(words[0])
        args = _args(words)
        if prog in DELETES:
            for a in args:
                add(Action.FILE_DELETE, a)
        elif prog in WRITES_ALL:
            for a in args:
                add(Action.FILE_WRITE, a)
        elif prog in MOVES:
            for a in args[:-1]:
                add(Action.FILE_DELETE, a)
            if args:
                add(Action.FILE_WRITE, args[-1])
        elif prog in WRITES_LAST and len(args) >= 2:
            add(Action.FILE_WRITE, args[-1])
        elif prog == "dd":
            for w in words[1:]:
                if w.startswith("of="):
                    add(Action.FILE_WRITE, w[3:])
        elif prog in IN_PLACE and any(w.startswith(IN_PLACE[prog]) for w in words[1:]):
            for a in args[1:] if prog in ("sed", "perl") else args:
                add(Action.FILE_WRITE, a)
    return list(dict.fromkeys(out))


__all__ = ["shell_writes"]
