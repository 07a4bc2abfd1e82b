"""The audit pages in a real headless Chromium (Debian's, driven by Playwright's client; nothing
downloaded): log in with the server's token, open /guard/, filter, click into a session and see
its denials.  A screenshot of each page is kept as a test artefact (the path is printed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_core import jp_asyncio_loop  # noqa: F401  (autouse again here)
from pytest_jupyter.jupyter_server import jp_server_cleanup  # noqa: F401
from test_pages import audit_sessions, pages_server_config  # noqa: F401  (the same real sessions and server configuration)

ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (make test installs Debian's chromium when it can)")


async def test_a_reviewer_logs_in_filters_and_sees_a_sessions_denials(
        http_server: Any, jp_serverapp: Any, jp_http_port: int, jp_base_url: str, audits: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright

    chromium = _chromium()
    ids = audits["ids"]
    root = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, timeout=120_000)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            await page.goto(root + "guard/")
            assert "/login" in page.url  # not logged in: the server's login page, nothing of the audits
            assert await page.locator("#sessions").count() == 0
            await page.fill("#password_input", jp_serverapp.identity_provider.token)
            await page.click("#login_submit")
            await page.wait_for_selector("#sessions")
            assert page.url.rstrip("/").endswith("/guard")
            rows = page.locator("#sessions tbody tr")
            # the three kernel sessions and the server's own chain (server-*.jsonl)
            assert await rows.count() == 4
            chains = [c.strip() for c in await page.locator("#sessions td.chain").all_inner_texts()]
            assert sorted(chains) == ["✓", "✓", "✓", "✗"]
            await page.screenshot(path=str(ARTEFACTS / "guard-list.png"), full_page=True)

            await page.select_option("#actor", "agent")
            await page.check("#denials")
            await page.click("#filter")
            await page.wait_for_url("**actor=agent**")
            assert "denials=1" in page.url
            assert await rows.count() == 1
            row = rows.first
            assert await row.get_attribute("data-session") == ids["agent"]
            assert (await row.locator("td.actor").inner_text()).strip() == "agent"
            assert (await row.locator("td.denials").inner_text()).strip() == "2"

            await row.locator("a.open").click()
            await page.wait_for_selector("#guard-bar")
            assert page.url.endswith(f"/guard/sessions/{ids['agent']}")
            bar = await page.locator("#guard-bar").inner_text()
            assert "chain ✓ intact" in bar and "2 denial(s)" in bar and ".jsonl" in bar and "review bundle" in bar
            text = await page.locator("body").inner_text()
            assert f"Audit notebook — session {ids['agent']}" in text
            assert text.count("DENIED at seq") >= 2
            assert "file.write" in text and "pages.csv" in text and "shell.exec" in text and "curl" in text
            shot = ARTEFACTS / "guard-session.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshots: {ARTEFACTS / 'guard-list.png'} {shot}")

            async with page.expect_download() as info:
                await page.click("#guard-bar >> text=.jsonl")
            download = await info.value
            assert download.suggested_filename == f"{ids['agent']}.jsonl"
            saved = Path(await download.path())
            assert saved.read_bytes() == (audits["folder"] / f"{ids['agent']}.jsonl").read_bytes()
        finally:
            await browser.close()
