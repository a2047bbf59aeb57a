"""The page in a real browser (Playwright + Debian Chromium); the API fuzzed from its schema."""

import pathlib
import shutil

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live_server(model_base):
    with LiveServer(model_base) as server:
        yield server.url


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
def test_page_in_a_real_browser(live_server, test_images, tmp_path):
    from playwright.sync_api import sync_playwright

    image = tmp_path / "fashion.png"
    image.write_bytes(test_images[0])
    expected = httpx.post(
        f"{live_server}/predict", files={"file": ("fashion.png", test_images[0])}
    ).json()
    name = expected["predictions"][0]["class_name"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.goto(live_server + "/")
            page.set_input_files("#file", str(image))
            page.wait_for_function("document.getElementById('prediction').textContent.length > 0")
            assert page.text_content("#prediction").startswith(name + " (")
            assert page.locator("#bars .row").count() == 10
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 5_000


def test_api_fuzzed_from_its_openapi_schema(live_server):
    """No input generated from the schema, for any operation, gets a 5xx."""
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/healthz", "/readyz", "/v1/metadata"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        check()
