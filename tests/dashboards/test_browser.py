"""The console in a real browser: `llmwatch console` serving a seeded store, Debian's headless
Chromium driven by Playwright, signing in and visiting every page through the sidebar. Fails on
any Streamlit error or exception block; leaves a screenshot of each page.

Needs /usr/bin/chromium (Debian package `chromium`; `make test` installs it where it can). Without
it the test is skipped, unless LLMWATCH_REQUIRE_BROWSER=1 (set by `make test` once it has
installed the browser), where a missing browser fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmwatch.core.processes import free_port, stop_process, wait_until
from tests.dashboards.conftest import PASSWORDS
from tests.dashboards.oidc_provider import OidcProvider

BROWSER = os.environ.get("LLMWATCH_BROWSER", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]
PAGES = {  # sidebar link -> something each page shows once its data is in
    "Overview": "Per app and release",
    "Traces": "newest matching trace",
    "Quality": "Compare two releases",
    "Drift": "Reference and current embeddings",
    "Alerts": "All incidents, latest state",
    "Review queue": "Agreement",
    "Releases": "Rollbacks and promotions",
    "SQL": "Read-only",
}


def _browser() -> str:
    if Path(BROWSER).exists():
        return BROWSER
    message = f"no Chromium at {BROWSER} (apt-get install chromium, or set LLMWATCH_BROWSER)"
    if os.environ.get("LLMWATCH_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def running_console(env: dict[str, str], cwd: Path, port: int) -> Iterator[str]:
    """`llmwatch console` on `port` with `env`, from `cwd` (where .streamlit/secrets.toml is read)."""
    with open(cwd / "console.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmwatch", "console", "--host", "127.0.0.1", "--console-port", str(port)],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok", 60, "console")
        yield url
    finally:
        stop_process(process, timeout_s=10)


@contextmanager
def chromium() -> Iterator[Any]:
    executable = _browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in(browser: Any, url: str, user: str) -> Any:
    """A new page of the console, signed in with `user`'s password."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_role("textbox", name="User").fill(user)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Signed in as")).to_be_visible()
    return page


def open_page(page: Any, link: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()


@pytest.fixture
def console_url(console_env, tmp_path: Path) -> Iterator[str]:  # noqa: ANN001
    with running_console(console_env[0], tmp_path, free_port()) as url:
        yield url


def test_every_page_renders_in_chromium_without_an_error(console_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Assertions wait 5 s by default; a page's first query on a busy 2-core CI machine can take
    # longer (seen once in a full run while the previous tests' servers were still stopping).
    expect.set_options(timeout=30_000)
    shots = Path(os.environ.get("LLMWATCH_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = signed_in(browser, console_url, "ada")
        for link, marker in PAGES.items():
            open_page(page, link)
            expect(page.get_by_text(marker).first).to_be_visible()
            # Streamlit shows its status widget while the script runs; wait for it to finish.
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)
            page.wait_for_timeout(300)
            page.screenshot(path=str(shots / f"{link.lower().replace(' ', '-')}.png"), full_page=True)
            failures = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
            assert failures.count() == 0, f"{link}: " + " | ".join(failures.all_inner_texts())
    assert len(list(shots.glob("*.png"))) == len(PAGES)


def test_single_sign_on_through_an_oidc_provider_maps_addresses_to_roles(console_env, tmp_path: Path) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    provider = OidcProvider("ada@example.com")
    port = free_port()
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(provider.secrets_toml(f"http://127.0.0.1:{port}"))
    env = {**console_env[0], "LLMWATCH_CONSOLE_OIDC_ROLES": "ada@example.com:reviewer,*@example.com:viewer"}
    try:
        with running_console(env, tmp_path, port) as url, chromium() as browser:
            for email, expected in (("ada@example.com", "ada@example.com (reviewer)"),
                                    ("kim@example.com", "kim@example.com (viewer)"),
                                    ("eve@elsewhere.org", "has no role in this console")):
                provider.email = email
                page = browser.new_context().new_page()  # a fresh cookie jar per person
                page.set_default_timeout(30_000)
                page.goto(url)
                page.get_by_role("button", name="Log in with single sign-on").click()
                expect(page.get_by_text(expected)).to_be_visible()
                page.context.close()
    finally:
        provider.close()


def test_review_decisions_from_the_keyboard(console_url: str, console_env) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    _, store, seeded = console_env
    decided = f"SELECT event_id, decision FROM {store.database}.reviews FINAL WHERE reviewer = 'rui' ORDER BY decided_at"
    with chromium() as browser:
        page = signed_in(browser, console_url, "rui")
        open_page(page, "Review queue")
        expect(page.get_by_text("5 event(s) still need decisions")).to_be_visible()
        expect(page.get_by_text("queued by toxic-outputs")).to_be_visible()
        first = next(e for e in seeded.review_event_ids if page.get_by_text(e).count())

        # Typing a note that contains the shortcut letters decides nothing.
        page.get_by_role("textbox", name="Note (needed for other)").fill("too formal, hallucinated")
        page.wait_for_timeout(1000)
        assert store.query(decided) == []

        page.evaluate("document.activeElement.blur()")  # leave the text box
        page.keyboard.press("t")
        wait_until(lambda: store.query(decided) == [(uuid.UUID(first), "toxic")], 20, "the decision")
        expect(page.get_by_text(first)).to_have_count(0)  # the next item is shown
