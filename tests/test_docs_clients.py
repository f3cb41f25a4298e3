"""The browser JavaScript client of docs/clients.md, run as written in Debian's chromium against a real server."""

import re
from pathlib import Path

import pytest

from tests.conftest import ws_url

pytestmark = pytest.mark.slow  # a browser

CLIENTS = (Path(__file__).resolve().parent.parent / "docs" / "clients.md").read_text()
CHROMIUM = Path("/usr/bin/chromium")


def test_the_readmes_javascript_client_gets_a_result(start_app, image_server):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium when run as root with apt-get")
    from playwright.sync_api import sync_playwright

    snippet = re.search(r"```js\n(.*?)```", CLIENTS, re.S).group(1)
    app = start_app()
    snippet = snippet.replace('"ws://localhost:8080/"', f'"{ws_url(app)}"')
    snippet = snippet.replace('"https://example.com/cat.jpg"', f'"{image_server.url("/photo.jpg")}"')
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            logged = []
            page.on("console", lambda message: logged.append(message.text))
            page.evaluate("() => {\n" + snippet + "\n}")  # as a function body: the snippet's value is no function
            for _ in range(600):
                if any(line.startswith("closed") for line in logged):
                    break
                page.wait_for_timeout(100)
        finally:
            browser.close()
    assert [line.split()[0] for line in logged] == ["queued", "status", "result", "closed"], logged
    assert logged[2] == "result 1 masks" and logged[3] == "closed 1000"
