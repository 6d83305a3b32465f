"""The status page at /admin/, clicked through in a real headless Chromium (Debian's, driven by Playwright).

Skips when Chromium or Playwright is missing (``scripts/system-deps.sh`` installs Chromium;
``pip install -e ".[test]"`` installs Playwright). Never ``playwright install``: no browser download.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import RunningGateway, fixture_entry, start_gateway

CHROMIUM = os.environ.get("MCP_GATEWAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)
expect = playwright_api.expect
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def in_thread(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on its own loop: Playwright's sync API owns this thread's event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=120)


async def _call_tools(gw: RunningGateway, *calls: tuple[str, dict[str, Any]]) -> None:
    async with gw.client() as client:
        for name, arguments in calls:
            await client.call_tool(name, arguments)


def call_tools(gw: RunningGateway, *calls: tuple[str, dict[str, Any]]) -> None:
    in_thread(_call_tools(gw, *calls))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(
        ["--servers", "fx", "--runtime", "host"],
        workdir=tmp_path_factory.mktemp("admin-page"),
        catalog={"fx": fixture_entry()},
    )
    try:
        call_tools(gateway, ("fx__echo", {"text": "page secret value"}), ("fx__fail", {"message": "x"}))
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except playwright_api.Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, gw: RunningGateway) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    urls: list[str] = []
    tab.on("request", lambda request: urls.append(request.url))
    tab.requested_urls = urls
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.console_errors = errors
    tab.goto(gw.base_url + "/admin/")
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, key: str) -> None:
    page.fill("#admin-key", key)
    page.click("#sign-in")


def test_the_page_asks_for_the_admin_key_and_refuses_a_wrong_one(page: Any) -> None:
    assert page.is_visible("#login-form")
    assert not page.is_visible("#dashboard")
    sign_in(page, "not-the-admin-key")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "refused" in page.inner_text("#login-error")
    assert page.evaluate("sessionStorage.length") == 0
    assert not page.is_visible("#dashboard")


def test_the_page_shows_servers_and_recent_calls(page: Any, gw: RunningGateway, tmp_path: Path) -> None:
    sign_in(page, gw.admin_key)
    server = page.wait_for_selector('[data-sandbox="default"] tr[data-server="fx"]')
    assert "running" in server.inner_text()
    cells = [c.inner_text() for c in server.query_selector_all("td")]
    assert cells[0] == "fx"
    assert cells[2].isdigit()  # pid
    assert cells[4] == "0"  # restarts
    page.wait_for_selector("#calls tbody tr")
    calls = page.inner_text("#calls tbody")
    assert "fx__echo" in calls and "fx__fail" in calls and "tool_error" in calls
    assert "page secret value" not in page.content()  # argument values are never shown
    assert page.inner_text("#summary") == "1 sandbox, 1 of 1 server running"
    shot = tmp_path / "admin-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("MCP_GATEWAY_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "admin-page.png")


def test_the_signed_in_page_logs_no_console_error(page: Any, gw: RunningGateway) -> None:
    sign_in(page, gw.admin_key)
    page.wait_for_selector('tr[data-server="fx"]')
    page.wait_for_selector("#calls tbody tr")
    page.reload()  # a second load asks for the icon again, from the cache or not
    page.wait_for_selector('tr[data-server="fx"]')
    page.wait_for_load_state("networkidle")
    assert page.console_errors == []


def test_the_favicon_is_served(gw: RunningGateway) -> None:
    import httpx

    response = httpx.get(gw.base_url + "/favicon.ico", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.text.lstrip().startswith("<svg")
    assert '<link rel="icon"' in httpx.get(gw.base_url + "/admin/", timeout=10).text


def test_the_claude_line_is_ready_and_a_minted_token_works(page: Any, gw: RunningGateway) -> None:
    sign_in(page, gw.admin_key)
    page.wait_for_selector('#connect-sandbox option[value="default"]', state="attached")
    line = page.inner_text("#connect-line")
    assert line == (f'claude mcp add --transport http mcp-gateway {gw.url} --header "Authorization: Bearer <token>"')
    with gw.admin() as admin:
        can_mint = admin.post("/admin/sandboxes/default/token", json={}).status_code == 200
    if not can_mint:
        pytest.skip("this gateway has no token route yet")
    page.click("#mint")
    # The page's CSP forbids eval, so no wait_for_function: expect() polls without it.
    expect(page.locator("#connect-line")).not_to_contain_text("<token>", timeout=TIMEOUT_MS)
    token = page.inner_text("#connect-line").rsplit("Bearer ", 1)[1].rstrip('"')
    assert token.count(".") == 2
    in_thread(_list_with(gw, token))


async def _list_with(gw: RunningGateway, token: str) -> None:
    async with gw.client(token) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert "fx__echo" in names


def test_the_key_stays_in_session_storage_and_out_of_every_url(page: Any, gw: RunningGateway) -> None:
    sign_in(page, gw.admin_key)
    page.wait_for_selector('tr[data-server="fx"]')
    page.reload()
    page.wait_for_selector('tr[data-server="fx"]')  # still signed in: the tab's session remembers
    assert page.evaluate("Object.values(sessionStorage)") == [gw.admin_key]
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert page.requested_urls and all(gw.admin_key not in url for url in page.requested_urls)
    assert gw.admin_key not in page.url
    assert page.input_value("#admin-key") == ""


def test_new_calls_appear_without_a_reload(page: Any, gw: RunningGateway) -> None:
    sign_in(page, gw.admin_key)
    page.wait_for_selector("#calls tbody tr")
    call_tools(gw, ("fx__add", {"a": 1, "b": 2}))
    expect(page.locator("#calls tbody")).to_contain_text("fx__add", timeout=TIMEOUT_MS)
    first = page.inner_text("#calls tbody tr:first-child")
    assert "fx__add" in first  # newest first


def test_signing_out_forgets_the_key(page: Any, gw: RunningGateway) -> None:
    sign_in(page, gw.admin_key)
    page.wait_for_selector('tr[data-server="fx"]')
    page.click("#sign-out")
    page.wait_for_selector("#login-form")
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    assert page.is_visible("#login-form") and not page.is_visible("#dashboard")


def test_the_page_is_served_with_a_strict_content_security_policy(gw: RunningGateway) -> None:
    import httpx

    response = httpx.get(gw.base_url + "/admin/", timeout=10)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "form-action 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert '<script src="/admin/admin.js">' in response.text
    assert "http" not in response.text.replace(gw.url, "")  # nothing from elsewhere: no CDN
    assert httpx.get(gw.base_url + "/admin", timeout=10, follow_redirects=True).url.path == "/admin/"
