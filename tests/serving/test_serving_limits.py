"""What a client cannot do to `tf-alexnet serve` on a real loopback port: hold a connection
without sending its headers, send headers without end, open connections without end, or make
the server hold more upload bytes than it allows. Also the small HTTP details strangers found:
405's Allow header, no redirect on a trailing slash, base64 as other tools write it.

One server with small limits for the whole module (HEADER_TIMEOUT_S 1, MAX_HEADER_BYTES 8 KiB,
MAX_CONNECTIONS 8, MAX_UPLOAD_BYTES and MAX_BODY_BYTES 3 MB), CORS for one origin, and its log
kept in a file.
"""

import base64
import json
import pathlib
import select
import socket
import time

import httpx
import pytest
from tf_alexnet_serving.inputs import EXAMPLE_PNG

from tests.conftest import LiveServer, json_log_lines

LIMITS = {
    "TF_ALEXNET_SERVE_HEADER_TIMEOUT_S": "1",
    "TF_ALEXNET_SERVE_MAX_HEADER_BYTES": "8192",
    "TF_ALEXNET_SERVE_MAX_CONNECTIONS": "8",
    "TF_ALEXNET_SERVE_MAX_UPLOAD_BYTES": "3000000",
    "TF_ALEXNET_SERVE_MAX_BODY_BYTES": "3000000",  # at most the budget (checked at start)
    "TF_ALEXNET_SERVE_CORS_ORIGINS": '["http://app.example"]',
}


@pytest.fixture(scope="module")
def server(model_base, tmp_path_factory):
    log = tmp_path_factory.mktemp("limits") / "serve.log"
    with LiveServer(model_base, env=LIMITS, stderr=log) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def wait_until_no_connections(server: LiveServer, within_s: float = 10) -> None:
    """Until the server has let go of every connection (none of its sockets on its port is
    established or waiting to close, in /proc/net/tcp): the limit counts a connection until
    its socket is closed, which may follow the client's close."""
    held = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT
    local = f"0100007F:{server.port:04X}"
    deadline = time.monotonic() + within_s
    while True:
        rows = [line.split() for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]]
        if not any(row[1] == local and row[3] in held for row in rows):
            return
        assert time.monotonic() < deadline, f"the server still holds connections on {local}"
        time.sleep(0.02)


def count(server: LiveServer, route: str, status: str) -> float:
    """`tf_alexnet_requests_total` of `route` and `status` on the server's `/metrics`."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    pattern = f'tf_alexnet_requests_total{{route="{route}",status="{status}"}} '
    lines = [line for line in text.splitlines() if line.startswith(pattern)]
    return float(lines[0].split()[-1]) if lines else 0.0


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Reads until the server closes: (status, headers, body)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_connection_that_sends_nothing_is_answered_408_and_closed(server):
    with connect(server) as sock:
        start = time.monotonic()
        status, headers, body = read_answer(sock)
    assert status == 408 and 0.9 < time.monotonic() - start < 5
    assert headers["connection"] == "close"
    assert "headers did not come within 1 s" in json.loads(body)["detail"]


def test_headers_sent_a_byte_at_a_time_are_cut_off(server):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with connect(server) as sock:
        start = time.monotonic()
        with pytest.raises(OSError):  # the server closes while the client still sends
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        assert time.monotonic() - start < 4
        status, _, _ = read_answer(sock)
    assert status == 408


def test_a_kept_alive_connection_may_idle_between_requests_longer_than_the_header_timeout(
    server,
):
    """The header timer runs from a request's first byte; between requests, uvicorn's
    keep-alive timeout (5 s) applies. Three requests on one socket, 1.5 s apart."""
    statuses = []
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += sock.recv(65536)
            statuses.append(int(data.split()[1]))
            time.sleep(1.5)
    assert statuses == [200, 200, 200]


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\n",  # a route that reads no body
        b"POST /nowhere HTTP/1.1\r\n",  # 404
        b"POST /predict HTTP/1.1\r\nContent-Type: text/plain\r\n",  # 415
    ],
)
def test_a_body_trickling_in_after_its_answer_does_not_hold_the_connection(server, request_head):
    """The answer went out, then uvicorn read the unread body to its end, re-arming its
    keep-alive timer on every byte: a byte every 0.3 s held the connection for good."""
    with connect(server) as sock:
        sock.sendall(request_head + b"Host: x\r\nContent-Length: 100000\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in answer
        start, closed = time.monotonic(), False
        while not closed and time.monotonic() - start < 10:
            try:
                sock.sendall(b"x")  # a byte every 0.3 s
                if select.select([sock], [], [], 0.3)[0]:
                    closed = sock.recv(65536) == b""  # nothing more to read: closed
            except OSError:  # reset, or a broken pipe
                closed = True
        assert closed and 0.9 < time.monotonic() - start < 4  # HEADER_TIMEOUT_S is 1 s here
    sent_whole = httpx.post(f"{server.url}/nowhere", content=b"x" * 100_000)
    assert sent_whole.status_code == 404  # a body that comes at once: answered as before


def test_a_body_the_facade_cannot_read_is_refused_before_it_is_sent(server):
    """415 came after the whole body (all of it sent for nothing, and `100 Continue` asked it), and
    a gzipped body was read as an image: "unsupported format"."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 2900000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 415 "), answer[:200]  # no 100 Continue before it
    png = base64.b64decode(EXAMPLE_PNG)
    for coding in ("gzip", "br"):
        refused = httpx.post(
            f"{server.url}/predict",
            content=png,
            headers={"Content-Type": "image/png", "Content-Encoding": coding},
        )
        assert refused.status_code == 415 and refused.json() == {
            "detail": f"Content-Encoding {coding} is not supported; send the body uncompressed."
        }
    plain = {"Content-Type": "image/png", "Content-Encoding": "identity"}
    assert httpx.post(f"{server.url}/predict", content=png, headers=plain).status_code == 200


def test_a_transfer_coding_other_than_chunked_is_refused(server):
    """`Transfer-Encoding: gzip, chunked` reached the image reader still gzipped: "body:
    unsupported format: expected JPEG, PNG, ...", as if the image were at fault."""
    import gzip

    png = base64.b64decode(EXAMPLE_PNG)
    packed = gzip.compress(png)
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    for coding in (b"gzip, chunked", b"x-custom, chunked"):
        with connect(server) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Transfer-Encoding: " + coding + b"\r\nConnection: close\r\n\r\n" + body
            )
            status, _, answer = read_answer(sock)
        assert status == 415, answer
        assert json.loads(answer)["detail"].startswith(
            f"Transfer-Encoding {coding.decode()} is not supported"
        )
    plain = b"%x\r\n%s\r\n0\r\n\r\n" % (len(png), png)
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + plain
        )
        status, _, answer = read_answer(sock)
    assert status == 200, answer


def test_headers_over_the_limit_get_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        status, headers, body = read_answer(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": "Request headers over 8,192 bytes."}
    small = httpx.get(f"{server.url}/healthz", headers={"X-Big": "a" * 4000})
    assert small.status_code == 200  # under the limit


def test_connections_past_the_limit_get_503_at_once(server):
    wait_until_no_connections(server)  # the earlier tests'
    with connect(server), pytest.raises(AssertionError, match="still holds connections"):
        wait_until_no_connections(server, within_s=0.3)  # seen while one is held
    held = [connect(server) for _ in range(8)]
    try:
        for sock in held:  # each has begun a request, and waits (under the 1 s header timeout)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.1)
        with connect(server) as extra:
            status, _, body = read_answer(extra)
        assert status == 503
        assert json.loads(body) == {"detail": "Over 8 connections; retry later."}
    finally:
        for sock in held:
            sock.close()
    wait_until_no_connections(server)
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # the slots are free again


def test_uploads_past_the_byte_budget_get_503_and_the_budget_comes_back(server):
    """One upload holds 2.5 MB of the 3 MB budget while it trickles: another of 1 MB is
    refused; once the first client goes away, its bytes are free again."""
    holder = connect(server)
    holder_client = f"127.0.0.1:{holder.getsockname()[1]}"
    try:
        holder.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 2900000\r\n\r\n" + b"\0" * 2_500_000
        )
        deadline = time.monotonic() + 30  # until the server has read past 2 MB of it
        while (
            refused := httpx.post(
                f"{server.url}/predict",
                content=b"\0" * 1_000_000,
                headers={"Content-Type": "image/png"},
            )
        ).status_code != 503:
            assert refused.status_code == 400 and time.monotonic() < deadline, refused.text
            time.sleep(0.1)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["detail"].startswith("Overloaded: 2,")
    finally:
        holder.close()
    # The holder's request has ended (its log line follows the release of its bytes).
    request_log_line(server, "client", holder_client, within_s=30)
    after = httpx.post(
        f"{server.url}/predict", content=b"\0" * 1_000_000, headers={"Content-Type": "image/png"}
    )
    assert after.status_code == 400 and "unsupported format" in after.json()["detail"]


def test_405_names_every_allowed_method(server):
    assert httpx.post(f"{server.url}/healthz").headers["allow"] == "GET, HEAD"
    assert httpx.put(f"{server.url}/readyz").headers["allow"] == "GET, HEAD"
    answer = httpx.get(f"{server.url}/predict")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert answer.json() == {"detail": "Method Not Allowed"}


def test_a_trailing_slash_is_a_json_404_not_a_redirect_to_the_host_header(server):
    answer = httpx.post(f"{server.url}/predict/", headers={"Host": "evil.example"})
    assert answer.status_code == 404 and "location" not in answer.headers
    assert answer.json() == {"detail": "Not Found"}


def test_base64_with_line_breaks_or_url_safe_is_read(server, test_images):
    png = test_images[0]
    bodies = {
        "standard": base64.b64encode(png).decode(),
        "mime": base64.encodebytes(png).decode(),  # a line break every 76 characters
        "url-safe, unpadded": base64.urlsafe_b64encode(png).decode().rstrip("="),
    }
    answers = {
        kind: httpx.post(f"{server.url}/predict", json={"instances": [{"b64": text}]})
        for kind, text in bodies.items()
    }
    assert {kind: a.status_code for kind, a in answers.items()} == dict.fromkeys(bodies, 200)
    scores = {a.json()["predictions"][0]["score"] for a in answers.values()}
    assert len(scores) == 1  # the same image each time
    assert "\\n" in json.dumps(bodies["mime"])  # the MIME text has its line breaks


def test_the_api_pages_example_body_is_answered(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    answer = httpx.post(f"{server.url}/predict", json=body["example"])
    assert answer.status_code == 200, answer.text


def test_metrics_label_refused_and_page_requests_with_their_route(server):
    """A 413 from the Content-Length gate and the API pages were counted as "unmatched"."""

    def count_(route: str, status: str) -> float:
        return count(server, route, status)

    before = count_("/predict", "413"), count_("/docs", "200"), count_("unmatched", "404")
    with connect(server) as sock:  # the gate answers from the header, before any body
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 20000000\r\nConnection: close\r\n\r\n"
        )
        assert read_answer(sock)[0] == 413
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert httpx.get(f"{server.url}/no/such/page").status_code == 404
    after = count_("/predict", "413"), count_("/docs", "200"), count_("unmatched", "404")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def request_log_line(server: LiveServer, key: str, value: str, within_s: float = 3) -> dict:
    """The request log's line whose `key` is `value` (within `within_s`: the line may follow
    the answer)."""
    deadline = time.monotonic() + within_s
    while True:
        for line in json_log_lines(server.stderr):
            if "request_id" in line and line.get(key) == value:
                return line
        assert time.monotonic() < deadline, f"no request log line with {key} {value}"
        time.sleep(0.1)


def _slow_headers(sock: socket.socket) -> None:
    sock.sendall(b"GET /heal")  # and nothing more: HEADER_TIMEOUT_S (1 s) passes


def _large_headers(sock: socket.socket) -> None:
    sock.sendall(b"GET /healthz?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")


def _malformed(sock: socket.socket) -> None:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")


@pytest.mark.parametrize(
    ("send", "status", "detail", "method", "path"),
    [
        (_slow_headers, 408, "The request's headers did not come within 1 s.", "GET", "/heal"),
        (_large_headers, 431, "Request headers over 8,192 bytes.", "GET", "/healthz"),
        (_malformed, 400, "Invalid HTTP request received.", "GET", "/healthz"),
        (None, 503, "Over 8 connections; retry later.", None, None),  # the 9th connection
    ],
    ids=["408 slow headers", "431 large headers", "400 malformed", "503 connection limit"],
)
def test_refusals_below_the_app_are_counted_logged_and_have_the_apps_headers(
    server, send, status, detail, method, path
):
    """The protocol's refusals had no request log line and no metric: slowloris attempts and
    hits on the connection limit were invisible. (malformed HTTP was uvicorn's plain text.)"""
    before = count(server, "refused_before_routing", str(status))
    wait_until_no_connections(server)  # the /metrics one: else the 9th would be the 8th
    held = [connect(server) for _ in range(8)] if send is None else []
    try:
        with connect(server) as sock:
            client = f"127.0.0.1:{sock.getsockname()[1]}"
            if send is not None:
                send(sock)
            answer_status, headers, body = read_answer(sock)
    finally:
        for other in held:
            other.close()
    assert answer_status == status
    line = request_log_line(server, "client", client)
    assert (line["status"], line["method"], line["path"], line["detail"]) == (
        status,
        method,
        path,
        detail,
    )
    time.sleep(0.2)
    assert count(server, "refused_before_routing", str(status)) - before == 1
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": detail}
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert line["request_id"] == headers["x-request-id"]


def test_the_request_log_names_each_requests_client(server):
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{server.url}/healthz")
    line = request_log_line(server, "request_id", answer.headers["x-request-id"])
    assert line["client"].startswith("127.0.0.1:") and line["status"] == 200


def test_a_websocket_upgrade_request_is_answered_as_plain_http(server):
    """uvicorn's websockets protocol took it, past the protocol's limits, and refused it with
    a 403 and no body; the server now attempts no upgrade."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    answer = httpx.get(f"{server.url}/healthz", headers=upgrade, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    assert answer.headers["x-content-type-options"] == "nosniff"


ORIGIN = {"Origin": "http://app.example"}


def test_a_413_from_the_body_gate_carries_the_cors_headers(server):
    """The gate answered outside CORS: a browser app on another origin saw "Failed to fetch"
    instead of the 413."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n"
            b"Content-Type: image/png\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n"
        )
        status, headers, body = read_answer(sock)
    assert status == 413 and json.loads(body) == {"detail": "Request body over 3,000,000 bytes."}
    assert headers["access-control-allow-origin"] == "http://app.example"
    assert "X-Request-ID" in headers["access-control-expose-headers"]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"Origin": "http://evil.example"}, "Disallowed CORS origin."),
        ({**ORIGIN, "Access-Control-Request-Headers": "X-Evil"}, "Disallowed CORS headers."),
    ],
    ids=["origin", "headers"],
)
def test_a_refused_preflight_is_json(server, headers, detail):
    """Starlette answered it in plain text, unlike every other error."""
    answer = httpx.options(
        f"{server.url}/predict",
        headers={**headers, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert answer.status_code == 400 and answer.json() == {"detail": detail}
    assert answer.headers["content-type"] == "application/json"
    assert "Origin" in answer.headers["vary"]


def test_preflights_are_not_counted_as_predictions(server):
    """A browser app's preflight was counted as route="/predict", status="200"."""
    before = count(server, "/predict", "200"), count(server, "OPTIONS /predict", "200")
    answer = httpx.options(
        f"{server.url}/predict",
        headers={**ORIGIN, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    # The API's methods, not DELETE, PUT, PATCH... which it answers 405.
    assert answer.headers["access-control-allow-methods"] == "GET, HEAD, POST"
    refused = httpx.options(
        f"{server.url}/predict",
        headers={**ORIGIN, "Access-Control-Request-Method": "DELETE"},
        timeout=10,
    )
    assert refused.status_code == 400 and refused.json() == {"detail": "Disallowed CORS method."}
    after = count(server, "/predict", "200"), count(server, "OPTIONS /predict", "200")
    assert [b - a for a, b in zip(before, after, strict=True)] == [0, 1]


def test_the_request_log_says_why_the_app_refused_a_request(server, test_images):
    """An error answer's line had its status and no reason: an operator could not tell a
    corrupt image from a wrong parameter, or an unknown route, without the client's help."""
    with httpx.Client(timeout=10) as client:
        bad_top_k = client.post(
            f"{server.url}/predict?top_k=abc", files={"file": ("a.png", test_images[0])}
        )
        corrupt = client.post(
            f"{server.url}/predict", files={"file": ("cut.png", test_images[0][:60])}
        )
        missing = client.get(f"{server.url}/no/such/page")
        fine = client.get(f"{server.url}/healthz")
    for answer in (bad_top_k, corrupt, missing):
        assert answer.status_code in (400, 404, 422), answer.text
        line = request_log_line(server, "request_id", answer.headers["x-request-id"])
        assert line["status"] == answer.status_code
        assert line["detail"] == answer.json()["detail"], line
    assert "detail" not in request_log_line(server, "request_id", fine.headers["x-request-id"])


def log_lines_of(server: LiveServer, client: str) -> list[dict]:
    """Every request log line of `client` (`host:port`) so far."""
    lines = json_log_lines(server.stderr)
    return [line for line in lines if "request_id" in line and line.get("client") == client]


def test_malformed_chunk_framing_in_a_body_the_app_has_not_answered_is_one_400(server):
    """The app had the request from its headers; the protocol answered the bad chunk size
    400, and the app, finding the client gone, logged and counted the same request again as
    a 499 under /predict: two log lines and two counts for one request."""
    before_400 = count(server, "refused_before_routing", "400")
    before_499 = count(server, "/predict", "499")
    time.sleep(0.2)
    with connect(server) as sock:
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        )
        status, _, body = read_answer(sock)
    assert (status, json.loads(body)) == (400, {"detail": "Invalid HTTP request received."})
    request_log_line(server, "client", client)
    time.sleep(0.5)  # the app's own line, were there one, follows at once
    assert [line["status"] for line in log_lines_of(server, client)] == [400]
    assert count(server, "refused_before_routing", "400") - before_400 == 1
    assert count(server, "/predict", "499") == before_499


def test_malformed_chunk_framing_after_the_answer_adds_no_second_answer(server):
    """A 415 answered from the headers, then a bad chunk size: a second answer, a 400, went
    out after the 415, an answer to no request (a kept-alive client reads it as the answer
    to its next one), and was counted and logged as a second request."""
    before_400 = count(server, "refused_before_routing", "400")
    time.sleep(0.2)
    with connect(server) as sock:
        client = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 415 ")
        sock.sendall(b"zz\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert b"HTTP/1.1 " not in first[9:] + rest  # one answer on the wire
    time.sleep(0.5)
    assert [line["status"] for line in log_lines_of(server, client)] == [415]
    assert count(server, "refused_before_routing", "400") == before_400


@pytest.mark.parametrize(
    ("origin", "request_head", "status"),
    [
        (
            "http://app.example",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n"
            b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            "http://app.example",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nX-Big: "
            + b"a" * 20_000
            + b"\r\n\r\n",
            431,
        ),
        (
            "http://app.example",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nX-Sl",
            408,
        ),
        (
            None,  # an origin CORS_ORIGINS does not allow: no CORS headers, as from the routes
            b"POST /predict HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n"
            b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
    ],
    ids=["400 chunk framing", "431 large headers", "408 slow headers", "400 other origin"],
)
def test_refusals_below_the_app_carry_the_cors_headers(server, origin, request_head, status):
    """The protocol's refusals had no CORS headers: a browser app on an allowed origin saw
    "Failed to fetch" where every refusal of the app's own routes could be read."""
    with connect(server) as sock:
        sock.sendall(request_head)
        answer_status, headers, body = read_answer(sock)
    assert answer_status == status and "detail" in json.loads(body)
    assert headers.get("access-control-allow-origin") == origin
    if origin is not None:
        assert headers["access-control-expose-headers"] == "X-Request-ID, Retry-After"
        assert headers["vary"] == "Origin"


@pytest.mark.parametrize("origins", [["*"], ["http://app.example"], []])
@pytest.mark.parametrize("origin", ["http://app.example", "http://other.example", None])
def test_refusals_below_the_app_have_the_cors_headers_the_routes_would_have(origins, origin):
    """What `cors_headers` gives is what Starlette's CORS middleware, set up as the facade sets
    it, puts on a route's answer: `*` answers any origin with `*`; no Origin, no CORS."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from tf_alexnet_serving.middleware import JsonCORSMiddleware, cors_headers, cors_options

    app = FastAPI()
    app.get("/")(lambda: {})
    if origins:
        app.add_middleware(JsonCORSMiddleware, **cors_options(origins))
    request = {} if origin is None else {"Origin": origin}
    answer = TestClient(app).get("/", headers=request)
    from_routes = [
        (name.lower().encode(), value.encode())
        for name, value in answer.headers.items()
        if name.lower().startswith("access-control-") or name.lower() == "vary"
    ]
    raw = [(name.lower().encode(), value.encode()) for name, value in request.items()]
    assert sorted(cors_headers([(b"host", b"x"), *raw], origins)) == sorted(from_routes)
    if origins and origin == "http://app.example":  # allowed: the routes' answer says so
        allowed = b"*" if origins == ["*"] else origin.encode()
        assert (b"access-control-allow-origin", allowed) in from_routes
    assert cors_headers(None, ["http://any.example"]) == []  # the connection limit's 503
