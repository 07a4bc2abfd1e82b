"""The audit notebook's HTML as a reader sees it: a real headless Chromium renders the page,
a screenshot is kept as a test artefact, and the assertions are on the rendered DOM."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from guard_kernel.cli.main import main

SMALL = Path(__file__).parent / "data" / "small-session.jsonl"
ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (make test installs Debian's chromium when it can)")


def _browse(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--hide-scrollbars", "--virtual-time-budget=5000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HOME": str(page.parent)})


def test_the_html_page_shows_the_header_counts_and_a_denied_cells_rule(tmp_path: Path) -> None:
    chromium = _chromium()
    assert main(["audit", "bundle", str(SMALL), "-o", str(tmp_path / "review")]) == 0
    page = tmp_path / "review" / "small-session.html"
    dom = _browse(chromium, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom.stdout))
    assert "Audit notebook — session 20260101T090000Z-0badc0de" in text
    # the counts table as rendered: cells, allowed, denied, truncated, warnings, would-deny
    assert re.search(r"cells allowed denied truncated warnings would-deny 3 1 1 1 0 0", text), text[:3000]
    assert "DENIED at seq 5" in text and "agent-no-egress (policies/default.yaml:31)" in text
    assert 'id="DENIED-at-seq-5"' in dom.stdout and 'href="#DENIED-at-seq-5"' in dom.stdout  # the link lands
    assert "<b>evil</b>" not in dom.stdout.replace("&lt;b&gt;evil&lt;/b&gt;", "")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "audit-notebook.png"
    res = _browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,1600")
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
