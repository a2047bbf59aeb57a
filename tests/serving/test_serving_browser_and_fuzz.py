"""The page in a real browser (Playwright + Debian Chromium); the API fuzzed from its schema."""

import base64
import contextlib
import json
import pathlib
import shutil

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    """Also: no console error (a /favicon.ico 404 was one on every load), and a long class
    name wraps in its column instead of running over its bar."""
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
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("requestfailed", lambda request: problems.append(request.url))
            page.goto(live_server + "/")
            page.set_input_files("#file", str(image))
            page.wait_for_function("document.getElementById('prediction').textContent.length > 0")
            assert page.text_content("#prediction").startswith(name + " (")
            assert page.locator("#bars .row").count() == 10
            assert problems == []
            overlap = page.evaluate(
                """() => {
                  const name = document.querySelector('#bars .row .name');
                  name.textContent = 'a_very_long_class_name_without_spaces_' + 'x'.repeat(40);
                  const bar = name.nextElementSibling.getBoundingClientRect();
                  return name.getBoundingClientRect().right - bar.left;
                }"""
            )
            assert overlap <= 0, f"the class name runs {overlap} px over its bar"
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 5_000


@contextlib.contextmanager
def _browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def _wait_for_answer(page, file_name):
    page.wait_for_function(
        "name => ['classified', 'refused'].some("
        "s => document.getElementById('file-name').textContent === name + ': ' + s)",
        arg=file_name,
    )


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
def test_page_never_shows_a_stale_answer(live_server, test_images, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "notes.png"
    good.write_bytes(test_images[0])
    bad.write_bytes(b"not an image at all")
    with _browser(tmp_path) as page:
        page.goto(live_server + "/")
        page.set_input_files("#file", str(good))
        _wait_for_answer(page, "good.png")
        assert page.text_content("#file-name") == "good.png: classified"
        assert page.text_content("#prediction") and page.locator("#bars .row").count() == 10
        page.set_input_files("#file", str(bad))
        _wait_for_answer(page, "notes.png")
        # The refused file's error replaces the last answer: nothing of good.png stays.
        assert page.text_content("#file-name") == "notes.png: refused"
        assert page.text_content("#prediction") == ""
        assert page.locator("#bars .row").count() == 0
        # Once: the server's message names the file ("notes.png: notes.png: ..." before).
        assert page.text_content("#error").startswith("notes.png: unsupported format")
        page.set_input_files("#file", str(good))
        _wait_for_answer(page, "good.png")
        assert page.text_content("#error") == "" and page.text_content("#prediction")


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
def test_page_takes_a_file_with_the_keyboard_alone(live_server, test_images, tmp_path):
    """The drop zone was a plain div (its file input hidden): Tab went from the API key field
    to nothing, so a keyboard user could not choose a file at all."""
    image = tmp_path / "keyed.png"
    image.write_bytes(test_images[0])
    with _browser(tmp_path) as page:
        choosers = []  # listened for before the page loads: Playwright intercepts from then on
        page.on("filechooser", lambda chooser: choosers.append(chooser))
        page.goto(live_server + "/")
        page.keyboard.press("Tab")  # the API key field
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "drop"
        for key in ("Enter", " "):
            asked = len(choosers)
            page.keyboard.press(key)
            for _ in range(100):
                if len(choosers) > asked:
                    break
                page.wait_for_timeout(50)
            assert len(choosers) == asked + 1, f"{key!r} opened no file chooser"
        choosers[-1].set_files(str(image))
        _wait_for_answer(page, "keyed.png")
        assert page.text_content("#file-name") == "keyed.png: classified"


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
def test_page_says_what_went_wrong_when_the_answer_is_not_the_facades(live_server, tmp_path):
    """A 200 without predictions (a proxy's login page) threw in the page, which stayed on
    "classifying…" for good; no answer at all said "TypeError: Failed to fetch"."""
    image = tmp_path / "img.png"
    image.write_bytes(_TINY_PNG)
    answers = {
        "proxy page": (
            lambda route: route.fulfill(status=200, body="<html>Sign in</html>"),
            "The server answered 200 with no prediction in it.",
        ),
        "no predictions": (
            lambda route: route.fulfill(status=200, json={"predictions": []}),
            "The server answered 200 with no prediction in it.",
        ),
        "gateway page": (
            lambda route: route.fulfill(status=502, body="<html>Bad gateway</html>"),
            "The server answered 502 Bad Gateway without a message.",
        ),
        "server down": (
            lambda route: route.abort("connectionrefused"),
            "No answer from the server (Failed to fetch).",
        ),
    }
    with _browser(tmp_path) as page:
        page.goto(live_server + "/")
        for name, (answer, message) in answers.items():
            page.route("**/predict*", answer)
            page.set_input_files("#file", str(image))
            _wait_for_answer(page, "img.png")
            assert page.text_content("#file-name") == "img.png: refused", name
            assert page.text_content("#error") == message, name
            page.unroute("**/predict*")


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
def test_page_says_what_it_does_with_a_drop_of_several_files_or_none(live_server, tmp_path):
    """Of several files dropped, the first was classified and the others dropped without a
    word; a drop with no file in it (text, a link) did nothing at all."""
    sent = []
    with _browser(tmp_path) as page:
        page.on(
            "request",
            lambda request: sent.append(request.url) if "predict" in request.url else None,
        )
        page.goto(live_server + "/")
        drop = """([names, png]) => {
          const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
          const dropped = new DataTransfer();
          for (const name of names) dropped.items.add(new File([bytes], name, {type: "image/png"}));
          if (!names.length) dropped.setData("text/plain", "a shirt");
          document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dropped, bubbles: true, cancelable: true}));
        }"""
        png = base64.b64encode(_TINY_PNG).decode()
        page.evaluate(drop, [["one.png", "two.png", "three.png"], png])
        page.wait_for_function("!document.getElementById('file-name').textContent.includes('…')")
        assert page.text_content("#file-name") == (
            "one.png: classified (the first of 3 files dropped: one at a time)"
        )
        page.evaluate(drop, [[], png])
        assert page.text_content("#error") == (
            "Nothing to classify: drop an image file (this drop held no file)."
        )
        assert page.text_content("#file-name") == "" and page.text_content("#prediction") == ""
    assert len(sent) == 1


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
@pytest.mark.parametrize(
    "path, rendered",
    [
        ("/docs", ".opblock-summary-path[data-path='/predict']"),
        ("/redoc", "text=Classify images"),
    ],
)
def test_api_pages_render_with_no_internet(live_server, tmp_path, path, rendered):
    """Swagger UI and ReDoc came from a CDN: offline (compose, an air-gapped host) they were
    blank. Every request that leaves the facade is refused here, as it is with no internet."""
    elsewhere = []

    def only_the_facade(route):
        if route.request.url.startswith(live_server + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with _browser(tmp_path) as page:
        page.route("**/*", only_the_facade)
        page.goto(live_server + path)
        page.wait_for_selector(rendered, timeout=30_000)
        assert "predict" in page.inner_text("body").lower()
    # ReDoc's script asks for its maker's logo (the "API docs by Redocly" link); nothing else.
    assert [url for url in elsewhere if url != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == []


@pytest.mark.skipif(
    not pathlib.Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"
)
def test_page_sends_the_api_key_and_asks_for_at_most_max_top_k(
    model_base, test_images, tmp_path, monkeypatch
):
    """The page asked for top_k=10 whatever MAX_TOP_K was: below 10, every drop got a 422."""
    monkeypatch.setenv("TF_ALEXNET_SERVE_API_KEY", "s3cret")
    monkeypatch.setenv("TF_ALEXNET_SERVE_MAX_TOP_K", "5")
    image = tmp_path / "fashion.png"
    image.write_bytes(test_images[0])
    with LiveServer(model_base) as server, _browser(tmp_path) as page:
        page.goto(server.url + "/")
        page.set_input_files("#file", str(image))
        _wait_for_answer(page, "fashion.png")
        assert "Missing or wrong API key" in page.text_content("#error")
        page.fill("#key", "s3cret")
        page.dispatch_event("#key", "change")
        page.set_input_files("#file", str(image))
        _wait_for_answer(page, "fashion.png")
        assert page.text_content("#file-name") == "fashion.png: classified"
        assert page.text_content("#error") == ""
        assert page.locator("#bars .row").count() == 5
        page.reload()  # the key is kept in the browser
        assert page.input_value("#key") == "s3cret"


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


_TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def _multipart(*parts, boundary="b0undary", closing=True):
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if closing else b"")


_PART = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
_MULTIPART = "multipart/form-data; boundary=b0undary"
_JSON = "application/json"

BODY_ODDITIES = {
    # JSON: nesting, numbers, Unicode, encodings, duplicate keys, wrong shapes.
    "nested arrays": (_JSON, b"[" * 100_000 + b"]" * 100_000),
    "nested objects": (_JSON, b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "nested instances": (_JSON, b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "huge integer": (_JSON, b'{"instances": ' + b"9" * 100_000 + b"}"),
    "huge float": (_JSON, b'{"instances": [{"b64": 1e999999}]}'),
    "NaN": (_JSON, b'{"instances": NaN}'),
    "lone surrogate": (_JSON, b'{"instances": [{"b64": "\\ud800"}]}'),
    "fullwidth base64": (_JSON, '{"instances": [{"b64": "ａＧｋ＝"}]}'.encode()),
    "RTL and zero-width": (_JSON, '{"instances": [{"b64": "\u202e\u200baGk="}]}'.encode()),
    "invalid UTF-8": (_JSON, b'{"instances": [{"b64": "\xff\xfe\xfa"}]}'),
    "UTF-8 BOM": (_JSON, b'\xef\xbb\xbf{"instances": []}'),
    "UTF-16": (_JSON, '{"instances": [{"b64": "aGk="}]}'.encode("utf-16")),
    "UTF-32 charset": (
        "application/json; charset=utf-32",
        '{"instances": [{"b64": "aGk="}]}'.encode("utf-32"),
    ),
    "duplicate top-level keys": (_JSON, b'{"instances": [], "instances": [{"b64": "aGk="}]}'),
    "duplicate b64 keys": (_JSON, b'{"instances": [{"b64": "aGk=", "b64": 5}]}'),
    "null": (_JSON, b"null"),
    "bare string": (_JSON, b'"instances"'),
    "empty body": (_JSON, b""),
    "whitespace": (_JSON, b" \r\n\t "),
    "NUL bytes": (_JSON, b"\x00" * 1000),
    "truncated": (_JSON, b'{"instances": [{"b64": "aGk='),
    "upper-case type": ("APPLICATION/JSON", b'{"instances": "x"}'),
    "many instances": (_JSON, b'{"instances": [' + b",".join([b'{"b64": "aGk="}'] * 5000) + b"]}"),
    "gzip said, not sent": (_JSON, b"\x1f\x8b\x08\x00garbage"),
    # multipart: boundaries, parts, headers, fields.
    "no boundary": ("multipart/form-data", _multipart(_PART + b"x")),
    "empty boundary": ("multipart/form-data; boundary=", _multipart(_PART + b"x")),
    "wrong boundary": ("multipart/form-data; boundary=other", _multipart(_PART + b"x")),
    "boundary of 1000 chars": (
        "multipart/form-data; boundary=" + "b" * 1000,
        _multipart(_PART + b"x", boundary="b" * 1000),
    ),
    "quoted boundary with spaces": (
        'multipart/form-data; boundary="a b"',
        _multipart(_PART + b"x", boundary="a b"),
    ),
    "non-ASCII boundary": (
        "multipart/form-data; boundary=\u00e9t\u00e9",
        _multipart(_PART + b"x", boundary="\u00e9t\u00e9"),
    ),
    "empty body multipart": (_MULTIPART, b""),
    "only the closing boundary": (_MULTIPART, b"--b0undary--\r\n"),
    "no closing boundary": (_MULTIPART, _multipart(_PART + b"x", closing=False)),
    "empty part": (_MULTIPART, _multipart(b"")),
    "empty parts": (_MULTIPART, _multipart(b"", b"", b"\r\n")),
    "part without headers": (_MULTIPART, _multipart(b"\r\nhello")),
    "no Content-Disposition": (_MULTIPART, _multipart(b"Content-Type: image/png\r\n\r\nx")),
    "no name": (_MULTIPART, _multipart(b'Content-Disposition: form-data; filename="a"\r\n\r\nx')),
    "no filename": (
        _MULTIPART,
        _multipart(b'Content-Disposition: form-data; name="file"\r\n\r\nx'),
    ),
    "empty filename": (
        _MULTIPART,
        _multipart(b'Content-Disposition: form-data; name="file"; filename=""\r\n\r\n'),
    ),
    "latin-1 filename": (
        _MULTIPART,
        _multipart(b'Content-Disposition: form-data; name="file"; filename="\xe9\xff"\r\n\r\nx'),
    ),
    "RFC 5987 filename": (
        _MULTIPART,
        _multipart(
            b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%F0%9F%98%80\r\n\r\nx"
        ),
    ),
    "header without colon": (_MULTIPART, _multipart(b"garbage header line\r\n\r\nx")),
    "huge part header": (
        _MULTIPART,
        _multipart(b"X-Pad: " + b"p" * 150_000 + b"\r\n" + _PART + b"x"),
    ),
    "many header lines": (_MULTIPART, _multipart(b"X-Pad: p\r\n" * 10_000 + _PART + b"x")),
    "bad base64 transfer encoding": (
        _MULTIPART,
        _multipart(b"Content-Transfer-Encoding: base64\r\n" + _PART + b"%%%not base64%%%"),
    ),
    "quoted-printable transfer encoding": (
        _MULTIPART,
        _multipart(b"Content-Transfer-Encoding: quoted-printable\r\n" + _PART + b"=ZZ=\r\n"),
    ),
    "nested multipart/mixed": (
        _MULTIPART,
        _multipart(
            b'Content-Disposition: form-data; name="file"\r\n'
            b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n"
            + _multipart(_PART + b"x", boundary="inner")
        ),
    ),
    "many fields": (
        _MULTIPART,
        _multipart(*[b'Content-Disposition: form-data; name="f"\r\n\r\nv'] * 2000),
    ),
    "many files": (_MULTIPART, _multipart(*[_PART + b"x"] * 2000)),
    "big text field": (
        _MULTIPART,
        _multipart(b'Content-Disposition: form-data; name="f"\r\n\r\n' + b"v" * 1_500_000),
    ),
    "file of zeros": (_MULTIPART, _multipart(_PART + b"\x00" * 1000)),
    # other content types, and none.
    "no content type": (None, b'{"instances": []}'),
    "form urlencoded": ("application/x-www-form-urlencoded", b"file=a.png"),
    "text": ("text/plain; charset=utf-8", "caf\u00e9".encode()),
    "garbage content type": (";;;==\u00e9", b"x"),
}


@pytest.mark.parametrize("name", list(BODY_ODDITIES))
def test_odd_bodies_get_a_json_4xx(live_server, name):
    """Whatever the body holds, a client's mistake is a 4xx with a JSON `detail`, never a 5xx."""
    content_type, body = BODY_ODDITIES[name]
    headers = {} if content_type is None else {"content-type": content_type.encode()}
    response = httpx.post(f"{live_server}/predict", content=body, headers=headers, timeout=60)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail


def _raw_http(url, request):
    import socket
    from urllib.parse import urlsplit

    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "request_head",
    [
        b"Content-Length: -1\r\n",
        b"Content-Length: abc\r\n",
        b"Content-Type: \x7f;;\r\n",
        b"X-Pad: " + b"p" * 200_000 + b"\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
    ],
    ids=["negative length", "text length", "control character", "huge header", "both lengths"],
)
def test_malformed_http_gets_a_4xx(live_server, request_head):
    """Malformed HTTP is refused by the HTTP server before the app sees it: still a 4xx."""
    status_line = _raw_http(
        live_server,
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" + request_head + b"\r\n{}",
    )
    assert status_line.startswith(b"HTTP/1.1 4"), status_line


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.just("aGk=")
    | st.just(base64.b64encode(_TINY_PNG).decode()),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["instances", "b64", "inputs", ""]) | st.text(), children)
    ),
    max_leaves=20,
)


@given(
    body=st.one_of(
        _JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries({"instances": _JSON_VALUES}).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    ),
    content_type=st.sampled_from(
        [_JSON, "application/json; charset=utf-8", _MULTIPART, "multipart/form-data", "text/plain"]
    ),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_bodies_never_get_a_5xx(live_server, body, content_type):
    response = httpx.post(
        f"{live_server}/predict", content=body, headers={"content-type": content_type}, timeout=60
    )
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code != 200:
        assert isinstance(response.json()["detail"], str)
