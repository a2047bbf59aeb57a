"""What a client cannot do to `tf-alexnet serve` on a real loopback port: hold a connection
without sending its headers, send headers without end, open connections without end, or make
the server hold more upload bytes than it allows. Also the small HTTP details strangers found:
405's Allow header, no redirect on a trailing slash, base64 as other tools write it.

One server with small limits for the whole module (HEADER_TIMEOUT_S 1, MAX_HEADER_BYTES 8 KiB,
MAX_CONNECTIONS 8, MAX_UPLOAD_BYTES 3 MB).
"""

import base64
import json
import select
import socket
import time

import httpx
import pytest
from tf_alexnet_serving.inputs import EXAMPLE_PNG

from tests.conftest import LiveServer

LIMITS = {
    "TF_ALEXNET_SERVE_HEADER_TIMEOUT_S": "1",
    "TF_ALEXNET_SERVE_MAX_HEADER_BYTES": "8192",
    "TF_ALEXNET_SERVE_MAX_CONNECTIONS": "8",
    "TF_ALEXNET_SERVE_MAX_UPLOAD_BYTES": "3000000",
}


@pytest.fixture(scope="module")
def server(model_base):
    with LiveServer(model_base, env=LIMITS) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


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
    """415 came after the whole body (9 MB sent for nothing, and `100 Continue` asked it), and
    a gzipped body was read as an image: "unsupported format"."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 9000000\r\nExpect: 100-continue\r\n\r\n"
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


def test_headers_over_the_limit_get_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        status, headers, body = read_answer(sock)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": "Request headers over 8,192 bytes."}
    small = httpx.get(f"{server.url}/healthz", headers={"X-Big": "a" * 4000})
    assert small.status_code == 200  # under the limit


def test_connections_past_the_limit_get_503_at_once(server):
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
    time.sleep(0.2)
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # the slots are free again


def test_uploads_past_the_byte_budget_get_503_and_the_budget_comes_back(server):
    """One upload holds 2.5 MB of the 3 MB budget while it trickles: another of 1 MB is
    refused; once the first client goes away, its bytes are free again."""
    holder = connect(server)
    try:
        holder.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 4000000\r\n\r\n" + b"\0" * 2_500_000
        )
        time.sleep(0.5)
        refused = httpx.post(
            f"{server.url}/predict",
            content=b"\0" * 1_000_000,
            headers={"Content-Type": "image/png"},
        )
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["detail"].startswith("Overloaded: 2,")
    finally:
        holder.close()
    time.sleep(0.5)
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

    def count(route: str, status: str) -> float:
        text = httpx.get(f"{server.url}/metrics").text
        pattern = f'tf_alexnet_requests_total{{route="{route}",status="{status}"}} '
        lines = [line for line in text.splitlines() if line.startswith(pattern)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = count("/predict", "413"), count("/docs", "200"), count("unmatched", "404")
    with connect(server) as sock:  # the gate answers from the header, before any body
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 20000000\r\nConnection: close\r\n\r\n"
        )
        assert read_answer(sock)[0] == 413
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert httpx.get(f"{server.url}/no/such/page").status_code == 404
    after = count("/predict", "413"), count("/docs", "200"), count("unmatched", "404")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
