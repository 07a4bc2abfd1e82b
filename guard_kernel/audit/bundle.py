"""What a reviewer attaches to a data review: the audit, its notebook (ipynb, HTML) and its proof.

:func:`bundle` copies the audit file as it is now (a live session's file keeps growing: the copy
is what everything else in the folder is made from), verifies the copy, renders it, and writes
``VERIFY.txt``: the verify result, the chain's last hash, and the SHA-256 of every file, so a
reviewer can check that the documents are the ones made from this proof.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass

from guard_kernel.audit.notebook import NotebookRenderer, to_html, to_ipynb


@dataclass(frozen=True)
class Bundle:
    """The files of a bundle and what verifying its audit said."""

    folder: str
    files: tuple[str, ...]
    ok: bool
    """The bundled audit's hash chain is intact."""
    verify_text: str


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def bundle(audit: str, folder: str) -> Bundle:
    """Write the bundle of the audit file *audit* into *folder* (created if need be)."""
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(audit)
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    copy = os.path.join(folder, f"{stem}.jsonl")
    if os.path.abspath(copy) != os.path.abspath(audit):
        shutil.copyfile(audit, copy)
    r = NotebookRenderer(f"{stem}.jsonl").feed_file(copy)
    nb = r.notebook()
    ipynb, html = os.path.join(folder, f"{stem}.ipynb"), os.path.join(folder, f"{stem}.html")
    _write(ipynb, to_ipynb(nb))
    _write(html, to_html(nb))
    res = r.check.result()
    text = "\n".join([
        f"audit:      {stem}.jsonl",
        f"session:    {res.session}",
        f"verify:     {'ok, hash chain intact' if res.ok else 'BROKEN: ' + str(res.problem)}",
        f"records:    {res.records} good record(s)",
        f"ended:      {res.ended}",
        f"last hash:  {r.last_hash}",
        "",
        "sha256 of the files of this bundle:",
        *(f"  {_sha256(p)}  {os.path.basename(p)}" for p in (copy, ipynb, html)),
        "",
        f"check it:   guard-kernel audit verify {stem}.jsonl",
        "           (its last record's hash is the last hash above, and the notebook's",
        "            metadata.guard_kernel.last_hash)",
        "",
    ])
    verify_txt = os.path.join(folder, "VERIFY.txt")
    _write(verify_txt, text)
    return Bundle(folder, (copy, ipynb, html, verify_txt), res.ok, text)


__all__ = ["Bundle", "bundle"]
