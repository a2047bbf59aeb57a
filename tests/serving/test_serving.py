"""The FastAPI facade with the embedded (local) backend: routes, errors, batching, real server."""

import asyncio
import base64
import datetime
import gc
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from tf_alexnet_serving import Settings, create_app
from tf_alexnet_serving.batching import DeadlineExceeded, MicroBatcher, QueueFull, TakeTurns
from tf_alexnet_serving.classes import ClassNames
from tf_alexnet_serving.routes import UNDECODABLE, _prediction

from tests.conftest import LiveServer, json_log_lines
from tf_alexnet.predict import predict_files

BF16_REWRITE_TOLERANCE = 2e-2


@pytest.fixture(scope="module")
def client(model_base):
    settings = Settings(model_base_path=str(model_base), max_body_bytes=200_000, max_files=4)
    with TestClient(create_app(settings)) as client:
        yield client


def _png_bomb(width=100_000, height=100_000):
    header = b"\x89PNG\r\n\x1a\n"
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return header + len(ihdr[4:]).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")


def _multipart_with(extra_headers, boundary=b"b0undary"):
    """A one-file multipart request whose part has `extra_headers`, delimited by `boundary`
    (the Content-Type always names b0undary)."""
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        + extra_headers + b"\r\nxx\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=b0undary"}}


def _gif_bomb(width=10_000, height=10_000):
    """A GIF whose 1x1 logical screen holds one frame of `width` x `height` (data cut short)."""
    screen = b"GIF89a" + (1).to_bytes(2, "little") * 2 + b"\x00\x00\x00"
    frame = b"," + b"\x00" * 4 + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return screen + frame + b"\x00\x08\x02\x00\x01\x00;"


def test_predict_multipart_matches_the_exported_model(client, model_base, test_images, tmp_path):
    image = tmp_path / "shirt.png"
    image.write_bytes(test_images[0])
    (expected,) = predict_files([str(image)], model_base / "alexnet", top_k=10)  # every class
    response = client.post("/predict", files={"file": ("shirt.png", test_images[0], "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == {"name": "alexnet", "version": 1}
    (prediction,) = answer["predictions"]
    assert prediction["file"] == "shirt.png"
    # BF16=auto runs the float32 export in bf16 on CPUs whose bf16 units beat float32
    # (docs/precision.md): probabilities then differ from float32 by up to ~1e-2, so where the
    # test model's two best classes are that close, bf16 may rank either first.
    rewrite = client.get("/v1/metadata").json()["bf16_rewrite"]["enabled"]
    tolerance = BF16_REWRITE_TOLERANCE if rewrite else 1e-5
    float32 = {class_id: (name, score) for class_id, name, score in expected.top}
    name, score = float32[prediction["class_id"]]
    assert prediction["class_name"] == name
    assert prediction["score"] == pytest.approx(score, abs=tolerance)
    if rewrite:
        assert score >= expected.top[0][2] - tolerance  # a top class within bf16's error
    else:
        assert prediction["class_id"] == expected.top[0][0]
    assert len(prediction["top_k"]) == 5 and answer["server_time_ms"] > 0


def test_predict_binary_body_answers_as_multipart(client, test_images):
    """One image as the whole body: the same answer as a multipart upload, named by ?filename."""
    for image in test_images[:3]:
        form = client.post("/predict", files={"file": ("a.png", image, "image/png")}).json()
        body = client.post("/predict", content=image, headers={"Content-Type": "image/png"})
        assert body.status_code == 200, body.text
        (from_body,), (from_form,) = body.json()["predictions"], form["predictions"]
        assert from_body["file"] == "body"
        assert from_body["top_k"] == from_form["top_k"]
    named = client.post(
        "/predict?filename=shirt.png&top_k=2",
        content=test_images[0],
        headers={"Content-Type": "image/png"},
    )
    (prediction,) = named.json()["predictions"]
    assert prediction["file"] == "shirt.png" and len(prediction["top_k"]) == 2


def test_predict_takes_tf_servings_named_row_format(client, test_images):
    """`{"instances": [{"image_bytes": {"b64": ...}}]}`, TF Serving's row format with the
    input named, was refused (400 'instances[0]: expected {"b64": ...}')."""
    encoded = base64.b64encode(test_images[0]).decode()
    named = client.post("/predict", json={"instances": [{"image_bytes": {"b64": encoded}}]})
    plain = client.post("/predict", json={"instances": [{"b64": encoded}]})
    assert named.status_code == 200, named.text
    assert named.json()["predictions"] == plain.json()["predictions"]
    wrong = client.post("/predict", json={"instances": [{"pixels": {"b64": encoded}}]})
    assert wrong.status_code == 400 and "image_bytes" in wrong.json()["detail"]


def test_every_refused_image_of_a_request_is_named(client, test_images):
    """Files a.png, x.svg, y.svg: only x.svg was named, so the client fixed one and was refused
    again for the next."""
    files = [
        ("file", ("a.png", test_images[0], "image/png")),
        ("file", ("x.svg", b"<svg/>", "image/svg+xml")),
        ("file", ("y.txt", b"hello", "text/plain")),
    ]
    answer = client.post("/predict", files=files)
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert detail.startswith("x.svg: unsupported format") and "; y.txt: unsupported" in detail
    assert "a.png" not in detail


def test_a_file_part_with_only_an_encoded_filename_is_told_apart(client, test_images):
    """`filename*=UTF-8''...` alone (RFC 5987, no plain filename) makes the part a text field:
    "No image file in the request" left the client guessing why."""
    body = (
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''h%C3%A9.png\r\n"
        b"Content-Type: image/png\r\n\r\n" + test_images[0] + b"\r\n--B--\r\n"
    )
    answer = client.post(
        "/predict", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert answer.status_code == 400
    assert "its parts (file) have no filename=" in answer.json()["detail"]


def test_predict_json_instances_and_several_files(client, test_images):
    body = {"instances": [{"b64": base64.b64encode(b).decode()} for b in test_images[:3]]}
    from_json = client.post("/predict?top_k=2", json=body).json()["predictions"]
    files = [("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(test_images[:3])]
    from_form = client.post("/predict?top_k=2", files=files).json()["predictions"]
    assert [p["class_id"] for p in from_json] == [p["class_id"] for p in from_form]
    assert [p["file"] for p in from_json] == ["instances[0]", "instances[1]", "instances[2]"]
    assert all(len(p["top_k"]) == 2 for p in from_json)


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        (
            {"files": {"file": ("notes.png", b"hello", "image/png")}},
            400,
            "notes.png: unsupported format",
        ),
        ({"files": {"file": ("empty.png", b"", "image/png")}}, 400, "empty.png: empty file"),
        ({"files": {"file": ("bomb.png", _png_bomb(), "image/png")}}, 400, "over the limit"),
        ({"files": {"file": ("bomb.gif", _gif_bomb(), "image/gif")}}, 400, "over the limit"),
        ({"files": {"note": (None, "just text")}}, 400, "its parts (note) have no filename="),
        ({"data": {"field": "value"}}, 415, "multipart/form-data"),
        ({"json": {"instances": [{"b64": "%%%"}]}}, 400, "instances[0]: invalid base64"),
        ({"json": {"instances": [{"b64": "aGk=", "x": 1}]}}, 400, "instances[0]: expected"),
        ({"json": {"inputs": []}}, 400, 'Expected {"instances"'),
        ({"content": b"raw", "headers": {"content-type": "image/png"}}, 400, "body: unsupported"),
        ({"content": b"", "headers": {"content-type": "image/jpeg"}}, 400, "body: empty file"),
        ({"content": b"raw", "headers": {"content-type": "text/plain"}}, 415, "image as the body"),
        (
            {"files": [("file", (f"{i}.png", b"x", "image/png")) for i in range(6)]},
            400,
            "Too many files. Maximum number of files is 4.",
        ),
        (
            {"content": b"junk", "headers": {"content-type": "multipart/form-data"}},
            400,
            "Missing boundary in multipart.",
        ),
        (
            {"content": b"x" * 300_000, "headers": {"content-type": "application/json"}},
            413,
            "over 200,000 bytes",
        ),
        # python-multipart's findings, where Starlette says only "Invalid multipart data."
        (
            _multipart_with(b"X-Long: " + b"a" * 5_000 + b"\r\n"),
            400,
            "Malformed multipart body: a part has a header line over 4,224 bytes.",
        ),
        (
            _multipart_with(b"".join(b"X-%d: 1\r\n" % i for i in range(9))),
            400,
            "Malformed multipart body: a part has over 8 header lines.",
        ),
        (
            _multipart_with(b"", boundary=b"other"),
            400,
            "Malformed multipart body: it does not begin with the boundary that its Content-Type",
        ),
        (_multipart_with(b"no colon here\r\n"), 400, "Malformed multipart body: Found invalid"),
    ],
)
def test_bad_requests_get_clear_json_errors(client, kwargs, status, message):
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail and f"{status}: " not in detail  # the status is not the message


def test_a_multipart_body_cut_short_is_refused_not_answered_in_part(client, test_images):
    """The form parser drops a part that never ends: a body cut inside its second image (or
    without its closing delimiter) was answered 200 with one prediction."""

    def part(name, data):
        return (
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
            b"Content-Type: image/png\r\n\r\n%s\r\n" % (name, data)
        )

    first, second = part(b"a.png", test_images[0]), part(b"b.png", test_images[1])
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    whole = first + second + b"--XyZ--\r\nan epilogue"  # an epilogue is allowed
    answer = client.post("/predict", content=whole, headers=headers)
    assert answer.status_code == 200, answer.text
    assert [p["file"] for p in answer.json()["predictions"]] == ["a.png", "b.png"]
    field = b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n--XyZ--\r\n'
    spoofed = part(b"a.png", test_images[0] + b"--XyZ--")  # the closing words inside an image
    for cut in (
        first + second[: len(second) // 2],
        first + second,
        spoofed + second[: len(second) // 2],  # these two were answered 200, for a.png alone
        first + field + second[: len(second) // 2],
    ):
        response = client.post("/predict", content=cut, headers=headers)
        assert response.status_code == 400
        assert "ends before its closing boundary" in response.json()["detail"]


def test_corrupt_image_fails_the_request_naming_it(client, test_images):
    truncated = test_images[1][:60]  # a valid PNG header, then the data stops
    files = [
        ("file", ("good.png", test_images[0], "image/png")),
        ("file", ("cut.png", truncated, "image/png")),
    ]
    response = client.post("/predict", files=files)
    assert response.status_code == 400
    assert response.json()["detail"] == f"cut.png: {UNDECODABLE}"


def test_a_failure_that_is_not_the_image_is_a_500_not_a_400(model_base, test_images):
    """Any exception from the model call was answered 400 "could not be decoded", blaming the
    client's image, and never reached the server's log."""

    def out_of_memory(images):
        raise MemoryError("the model call ran out of memory")

    files = {"file": ("good.png", test_images[0], "image/png")}
    settings = Settings(model_base_path=str(model_base))
    for raised in (False, True):  # as a client sees it; as the server (uvicorn logs it) does
        with TestClient(create_app(settings), raise_server_exceptions=raised) as client:
            client.app.state.backend._batcher._run = out_of_memory
            if raised:
                with pytest.raises(MemoryError, match="the model call ran out of memory"):
                    client.post("/predict", files=files)
            else:
                response = client.post("/predict", files=files)
                assert response.status_code == 500
                assert response.json() == {"detail": "Internal server error (MemoryError)."}


def test_a_500_carries_the_request_id_and_the_headers_of_every_answer(model_base, test_images):
    """Starlette answered a bug's 500 outside every middleware: no X-Request-ID (the key to
    its traceback in the log), no security headers, no CORS headers (a browser app on another
    origin saw "Failed to fetch")."""

    def out_of_memory(images):
        raise MemoryError("the model call ran out of memory")

    origin = "http://app.example"
    settings = Settings(model_base_path=str(model_base), cors_origins=[origin])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.backend._batcher._run = out_of_memory
        response = client.post(
            "/predict",
            files={"file": ("good.png", test_images[0], "image/png")},
            headers={"Origin": origin, "X-Request-ID": "trace-500"},
        )
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error (MemoryError)."}
    assert response.headers["x-request-id"] == "trace-500"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["access-control-allow-origin"] == origin


# pydantic's lax mode read "1.0", "2.000", "1_0" (as 10), " 3" and "+3" as integers.
@pytest.mark.parametrize(
    "top_k", ["0", "-1", "11", "abc", "", "1.5", "1.0", "2.000", "1_0", " 3", "\uff13", "true"]
)
def test_top_k_out_of_range_is_one_sentence(client, test_images, top_k):
    """FastAPI's own 422 had a list of pydantic errors as its detail, unlike every other
    refusal. Only decimal digits are an integer."""
    response = client.post(f"/predict?top_k={top_k}", files={"file": ("a.png", test_images[0])})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "Query parameter top_k should be an integer from 1 to 10. "
        f"Received: top_k={top_k!r}."
    }


def test_top_k_and_signature_name_in_a_body_are_refused_not_ignored(client, test_images):
    """`top_k` in a JSON body or a form field, an unknown JSON key, and a `signature_name`
    the facade does not serve were ignored: the answer was for 5 classes of the default
    signature, whatever the client had asked."""
    encoded = {"b64": base64.b64encode(test_images[0]).decode()}
    for signature in ("serving_default", ""):  # TF Serving's "" is its default
        served = client.post("/predict", json={"signature_name": signature, "instances": [encoded]})
        assert served.status_code == 200, served.text
    refusals = {
        "json top_k": (
            {"json": {"instances": [encoded], "top_k": 1.0}},
            "top_k is a query parameter (POST /predict?top_k=3), not read in the JSON body. "
            "Received: top_k=1.0.",
        ),
        "json top_k true": (
            {"json": {"instances": [encoded], "top_k": True}},
            "top_k is a query parameter (POST /predict?top_k=3), not read in the JSON body. "
            "Received: top_k=true.",
        ),
        "form top_k": (
            {"files": {"file": ("a.png", test_images[0])}, "data": {"top_k": "2"}},
            "top_k is a query parameter (POST /predict?top_k=3), not read in a form field. "
            'Received: top_k="2".',
        ),
        "signature": (
            {"json": {"signature_name": "serving_pixels", "instances": [encoded]}},
            'signature_name should be "serving_default", the one signature the facade serves '
            '(or be left out). Received: signature_name="serving_pixels".',
        ),
        "signature not a string": (
            {"json": {"signature_name": ["serving_default"], "instances": [encoded]}},
            'signature_name should be "serving_default", the one signature the facade serves '
            '(or be left out). Received: signature_name=["serving_default"].',
        ),
        "columnar beside rows": (
            {"json": {"instances": [encoded], "inputs": [encoded]}},
            'The JSON body takes "instances" and, optionally, "signature_name"; "inputs" would '
            'be ignored. Received keys: "instances", "inputs".',
        ),
    }
    for case, (kwargs, detail) in refusals.items():
        response = client.post("/predict?top_k=2", **kwargs)
        assert (response.status_code, response.json()) == (400, {"detail": detail}), case


def test_a_json_key_given_twice_is_refused_not_the_last_kept(client, test_images):
    """`{"instances": [A], "instances": [B]}` was answered for B alone (json keeps the last)."""
    one, other = (base64.b64encode(image).decode() for image in test_images[:2])
    bodies = {
        '"instances"': (
            f'{{"instances": [{{"b64": "{one}"}}], "instances": [{{"b64": "{other}"}}]}}'
        ),
        '"b64"': f'{{"instances": [{{"b64": "{one}", "b64": "{other}"}}]}}',
    }
    for key, body in bodies.items():
        response = client.post(
            "/predict", content=body, headers={"Content-Type": "application/json"}
        )
        assert (response.status_code, response.json()) == (
            400,
            {"detail": f"The JSON body gives the key {key} twice: give it once."},
        )


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        (
            "topk=2",
            "Query parameter topk is not one that /predict takes (top_k, filename). "
            "Received: topk='2'.",
        ),
        (
            "top_k=2&top_k=3",
            "Query parameter top_k should be given once. Received: top_k='2', '3'.",
        ),
        (
            "filename=a.png&filename=b.png",
            "Query parameter filename should be given once. Received: filename='a.png', 'b.png'.",
        ),
        (
            "top%20k=2",
            "Query parameter 'top k' is not one that /predict takes (top_k, filename). "
            "Received: 'top k'='2'.",
        ),
    ],
    ids=["misspelt", "top_k twice", "filename twice", "not a name"],
)
def test_an_unknown_or_repeated_query_parameter_is_refused(client, test_images, query, detail):
    """`?topk=2` (a typo) was ignored and the answer had 5 classes; `?top_k=2&top_k=3` was
    answered for the last value, silently."""
    response = client.post(
        f"/predict?{query}", content=test_images[0], headers={"content-type": "image/png"}
    )
    assert (response.status_code, response.json()) == (422, {"detail": detail})


def test_filename_with_parts_or_instances_is_refused_not_ignored(client, test_images):
    """`?filename=x.png` names an image sent as the whole body; with a multipart or JSON body
    it was ignored without a word (the answer named the part's own filename)."""
    one = base64.b64encode(test_images[0]).decode()
    for kind, where, body in (
        ("multipart/form-data", "its filename=", {"files": {"file": ("a.png", test_images[0])}}),
        ("application/json", "instances[N]", {"json": {"instances": [{"b64": one}]}}),
    ):
        response = client.post("/predict?filename=zzz.png", **body)
        assert (response.status_code, response.json()) == (
            422,
            {
                "detail": "Query parameter filename names one image sent as the whole body "
                f"(Content-Type: image/png, ...); an image of a {kind} body is named by "
                f"{where}. Received: filename='zzz.png'."
            },
        )
        assert client.post("/predict", **body).status_code == 200  # the same, without it
    raw = client.post(
        "/predict?filename=zzz.png", content=test_images[0], headers={"content-type": "image/png"}
    )
    assert raw.status_code == 200 and raw.json()["predictions"][0]["file"] == "zzz.png"


def test_a_too_long_filename_is_one_readable_sentence(client, test_images):
    """pydantic's message was pasted after "should be": "Query parameter filename should be
    String should have at most 1024 characters."."""
    response = client.post(
        f"/predict?filename={'a' * 1025}",
        content=test_images[0],
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": "Query parameter filename should have at most 1024 characters. "
        f"Received: filename='{'a' * 36}...."
    }


def test_a_long_invalid_value_is_not_said_back_whole(client, test_images):
    top_k = "9" * 5000  # came back in full
    response = client.post(f"/predict?top_k={top_k}", files={"file": ("a.png", test_images[0])})
    assert response.status_code == 422
    assert response.json()["detail"].endswith(f"Received: top_k='{'9' * 36}....")
    assert len(response.json()["detail"]) < 150


def test_top_k_ranks_by_score_and_ties_go_to_the_lowest_class_id():
    names = ClassNames(None)
    names.reset(5, ["a", "b", "c", "d", "e"])
    scores = np.array([0.1, 0.3, 0.05, 0.3, 0.25], np.float32)
    prediction = _prediction("x.png", scores, names, top_k=4)
    assert [(t.class_id, t.class_name) for t in prediction.top_k] == [
        (1, "b"), (3, "d"), (4, "e"), (0, "a")
    ]  # fmt: skip
    assert (prediction.class_id, prediction.class_name) == (1, "b") == (int(scores.argmax()), "b")
    assert prediction.score == pytest.approx(0.3) and type(prediction.score) is float
    assert len(_prediction("x.png", scores, names, top_k=9).top_k) == 5  # no more than classes


def test_health_metadata_metrics_and_page(client, test_images):
    # its own request, so that the metric below is there when this test runs alone
    assert client.post("/predict", files={"file": ("a.png", test_images[0])}).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "alexnet", "version": 1}
    metadata = client.get("/v1/metadata").json()
    assert metadata["class_names"][9] == "Ankle boot" and metadata["input_shape"] == [28, 28, 1]
    metrics = client.get("/metrics").text
    assert 'tf_alexnet_requests_total{route="/predict",status="200"}' in metrics
    assert "tf_alexnet_batch_size_bucket" in metrics
    assert "\ntf_alexnet_model_ready 1.0\n" in metrics
    page = client.get("/")
    assert page.status_code == 200 and '<input id="file" type="file"' in page.text
    for path in ("/", "/healthz", "/readyz", "/v1/metadata", "/metrics"):  # HEAD was a 405
        head = client.head(path)
        assert head.status_code == 200, path
        assert head.headers["content-type"] == client.get(path).headers["content-type"]
    for answer in (page, client.get("/nowhere"), client.get("/docs")):  # never framed, sniffed
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_api_pages_answer_head_as_get(client):
    """`curl -I /docs` was a 405 (`Allow: GET`): FastAPI's routes take only the methods they
    name, and HEAD was added to the facade's own pages alone."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == 200, path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
        assert head.content == b""
        assert client.post(path).headers["allow"] == "GET, HEAD", path
    schema = client.get("/openapi.json").json()
    assert not {"/docs", "/redoc"} & set(schema["paths"])  # still not in the document


def test_api_pages_assets_come_from_the_facade_under_one_metrics_label(client):
    page = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page
    assert "/docs-assets/redoc.standalone.js" in client.get("/redoc").text
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    missing = client.get("/docs-assets/no-such-file-4f1c")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    whole_answer = client.get("/docs-assets/swagger-ui.css")
    whole = whole_answer.content
    assert "accept-ranges" not in whole_answer.headers  # ranges are never served: not offered
    for asked in ("bytes=abc", "bytes=5-1", "bytes=99999999-", "bytes=0-9"):  # 400/416 in text
        ranged = client.get("/docs-assets/swagger-ui.css", headers={"Range": asked})
        assert ranged.status_code == 200 and ranged.content == whole, asked  # answered whole
    posted = client.post("/docs-assets/swagger-ui.css")  # Allow was empty: a mount's methods
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    metrics = client.get("/metrics").text
    # Labelled by the mount, not by the path asked for: any number of paths, one label.
    assert 'tf_alexnet_requests_total{route="/docs-assets",status="200"}' in metrics
    assert 'tf_alexnet_requests_total{route="/docs-assets",status="404"}' in metrics
    assert "no-such-file" not in metrics


def _sample(metrics_text, name):
    return next(
        float(line.split()[-1]) for line in metrics_text.splitlines() if line.startswith(name + " ")
    )


def test_model_call_metrics_count_client_calls_not_the_warm_up(model_base, test_images):
    with TestClient(create_app(Settings(model_base_path=str(model_base)))) as client:
        # the warm-up call at start (a slow first run) was not a client's: it was counted
        assert _sample(client.get("/metrics").text, "tf_alexnet_backend_seconds_count") == 0
        assert client.post("/predict", files={"file": ("a.png", test_images[0])}).status_code == 200
        metrics = client.get("/metrics").text
        assert _sample(metrics, "tf_alexnet_backend_seconds_count") == 1
        assert _sample(metrics, "tf_alexnet_batch_size_count") == 1


def test_the_app_freezes_what_lives_at_start_and_thaws_it_when_it_stops(model_base, test_images):
    """TensorFlow and the model are about 360,000 objects: frozen, the collector's full
    collections no longer walk them (each took 170 ms with d2l, stalling every request)."""
    gc.unfreeze()
    with TestClient(create_app(Settings(model_base_path=str(model_base)))) as client:
        frozen = gc.get_freeze_count()
        tracked = len(gc.get_objects())  # what collections still walk
        response = client.post("/predict", files={"file": ("a.png", test_images[0])})
        assert response.status_code == 200, response.text
    assert frozen > 50_000, frozen  # TensorFlow and Keras alone are more
    assert tracked < frozen / 2, (tracked, frozen)
    assert gc.get_freeze_count() == 0  # given back: the process goes on without the app


def test_api_key(model_base, test_images):
    settings = Settings(model_base_path=str(model_base), api_key="s3cret")
    with TestClient(create_app(settings)) as client:
        files = {"file": ("a.png", test_images[0], "image/png")}
        refused = client.post("/predict", files=files)
        assert refused.status_code == 401  # with the challenge HTTP asks of a 401
        assert refused.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
        assert client.head("/v1/metadata").status_code == 401
        ok = client.post("/predict", files=files, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        for wrong in ("s3cre", "s3cret!", "S3CRET", "s3cr\u00e9t".encode()):
            response = client.post("/predict", files=files, headers={"X-API-Key": wrong})
            assert response.status_code == 401, wrong
        assert client.get("/healthz").status_code == 200


def test_micro_batcher_groups_concurrent_requests_and_isolates_failures():
    sizes = []

    def run(items):
        sizes.append(len(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    async def main():
        batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.05)
        batcher.start()
        try:
            items = [f"x{i}" for i in range(12)] + ["bad"]
            return await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert results[:12] == [f"X{i}" for i in range(12)]
    assert isinstance(results[12], ValueError)
    assert max(sizes) == 8  # concurrent requests shared model calls, up to the limit


def test_micro_batcher_waits_only_for_callers_it_expects():
    """A lone caller never waits for company; callers a batch answered are waited for."""
    sizes = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.02)
        return items

    async def main():
        batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=1.0)
        batcher.start()
        try:
            start = time.perf_counter()
            await batcher.submit("alone")
            alone = time.perf_counter() - start

            async def client(name):  # a closed loop: send again as soon as answered
                for _ in range(3):
                    await batcher.submit(name)

            await asyncio.gather(*(client(i) for i in range(4)))
            return alone
        finally:
            await batcher.stop()

    alone = asyncio.run(main())
    assert alone < 0.5  # the model call takes 0.02 s; waiting for others would take 1 s
    assert sizes == [1, 4, 4, 4]  # the four callers came back together, every time


def test_take_turns_serves_groups_in_turn_and_each_in_order():
    async def main():
        queue = TakeTurns()
        for group, entry in ["A1", "A2", "A3", "B1", "C1", "C2"]:
            queue.put(group, group + entry)
        taken = [queue.get_nowait() for _ in range(len(queue))]
        with pytest.raises(asyncio.QueueEmpty):
            queue.get_nowait()
        waiting = asyncio.create_task(queue.get())  # waits for the next entry
        await asyncio.sleep(0.01)
        queue.put("D", "D1")
        return taken, await asyncio.wait_for(waiting, 1)

    taken, later = asyncio.run(main())
    assert taken == ["A1", "B1", "C1", "A2", "C2", "A3"]
    assert later == "D1"


def test_micro_batcher_does_not_hold_a_small_request_behind_a_large_one():
    """A one-image request that comes while a 16-image request is being served goes into
    the next model call, not after the large request's last image (first come, first served
    put it in the fifth call of four images)."""
    batches = []

    def run(items):
        batches.append(list(items))
        time.sleep(0.05)
        return [item.upper() for item in items]

    async def main():
        batcher = MicroBatcher(run, max_batch_size=4, max_wait_s=0)
        batcher.start()
        try:
            large = asyncio.gather(*(batcher.submit(f"big{i}", "large") for i in range(16)))
            await asyncio.sleep(0.02)  # the first model call runs meanwhile
            small = await batcher.submit("small")
            return await large, small
        finally:
            await batcher.stop()

    large, small = asyncio.run(main())
    assert small == "SMALL" and large == [f"BIG{i}" for i in range(16)]
    assert any("small" in batch for batch in batches[:2])
    # the large request's images still go in the order they came
    assert [item for batch in batches for item in batch if item != "small"] == [
        f"big{i}" for i in range(16)
    ]


def test_micro_batcher_keeps_each_model_call_within_its_pixel_budget():
    """16 images of 25 MP in one request were one model call of 4.5 s: a one-image request
    that came 0.5 s later waited for all of it. With a budget, large images go a few per call
    (one alone when over it), and small ones fill calls as before."""
    batches = []
    sizes = {"big": 10, "small": 1, "odd": None}  # odd: a cost that cannot be read

    def run(items):
        batches.append(list(items))
        time.sleep(0.05)
        return [item.upper() for item in items]

    def cost(item):
        found = sizes[item.rstrip("0123456789")]
        if found is None:
            raise ValueError("no header")
        return found

    async def main():
        batcher = MicroBatcher(run, 32, max_wait_s=0, cost=cost, max_batch_cost=25)
        batcher.start()
        try:
            large = asyncio.gather(*(batcher.submit(f"big{i}", "large") for i in range(5)))
            await asyncio.sleep(0.02)  # the first model call runs meanwhile
            small = asyncio.gather(*(batcher.submit(f"small{i}", "many") for i in range(8)))
            odd = asyncio.ensure_future(batcher.submit("odd"))
            return await large, await small, await odd
        finally:
            await batcher.stop()

    large, small, odd = asyncio.run(main())
    assert large == [f"BIG{i}" for i in range(5)] and len(small) == 8 and odd == "ODD"
    assert batches[0] == ["big0", "big1"]  # 20 of 25: a third big image would pass it
    assert all(sum(cost(item) or 0 for item in batch if item != "odd") <= 25 for batch in batches)
    # the small request and the odd one did not wait behind the large request's last images
    assert batches[1][:3] == ["big2", "small0", "odd"]
    lone = []
    asyncio.run(_over_budget(lone))
    assert lone == [["big0"], ["big1"]]  # each over the budget: alone, but served


async def _over_budget(batches):
    def run(items):
        batches.append(list(items))
        return list(items)

    batcher = MicroBatcher(run, 32, max_wait_s=0, cost=lambda item: 100, max_batch_cost=25)
    batcher.start()
    try:
        await asyncio.gather(batcher.submit("big0"), batcher.submit("big1"))
    finally:
        await batcher.stop()


@pytest.mark.slow
def test_served_model_allocates_from_a_memory_pool_unless_told_not_to(
    model_base, test_images, monkeypatch
):
    """Without a pool (Eigen's kernels on malloc, TensorFlow's choice on AVX2-only CPUs) the
    server shrank 25 MP uploads half as fast and served d2l 3-9% slower at concurrency 32;
    oneDNN, where TensorFlow runs it, brings its own pool."""
    from tf_alexnet import hardware

    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
    own_pool = hardware.onednn_expected()  # serve keeps TensorFlow's kernel choice
    added = "tensorflow-bfc" if hardware.on_x86() else "malloc"  # measured on x86 only
    for chosen, pool in (
        ({}, "onednn" if own_pool else added),
        ({"TF_CPU_ALLOCATOR_USE_BFC": "false"}, "onednn" if own_pool else "malloc"),
    ):
        with LiveServer(model_base, env=chosen) as server:
            assert httpx.get(f"{server.url}/v1/metadata").json()["cpu_memory_pool"] == pool
            answer = httpx.post(
                f"{server.url}/predict", files={"file": ("shirt.png", test_images[0])}
            )
            assert answer.status_code == 200, answer.text


def test_real_server_answers_curl(model_base, test_images, tmp_path):
    with LiveServer(model_base) as server:
        port = server.port
        image = tmp_path / "shirt.png"
        image.write_bytes(test_images[0])
        result = subprocess.run(
            ["curl", "-sS", "-F", f"file=@{image}", f"http://127.0.0.1:{port}/predict"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answer = __import__("json").loads(result.stdout)
        assert answer["predictions"][0]["file"] == "shirt.png"
        assert answer["predictions"][0]["class_name"] in metadata_names(port)
        head = subprocess.run(
            ["curl", "-sS", "-I", f"http://127.0.0.1:{port}/readyz"],
            capture_output=True,
            timeout=60,
            check=True,
        )  # a probe's HEAD: the status and headers, no body
        assert head.stdout.startswith(b"HTTP/1.1 200 ") and head.stdout.endswith(b"\r\n\r\n")

        # Concurrent clients all get answers.
        async def many():
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                files = {"file": ("a.png", test_images[2], "image/png")}
                return await asyncio.gather(
                    *(http.post("/predict", files=files) for _ in range(32))
                )

        responses = asyncio.run(many())
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["predictions"][0]["class_id"] for r in responses}) == 1
    # Leaving sends SIGTERM (`docker stop`): uvicorn shuts down, then the command ends with the
    # conventional status, not killed by the signal.
    assert server.process.returncode == 128 + signal.SIGTERM


def _log_lines(path):
    """The request log lines in a server's stderr."""
    return [line for line in json_log_lines(path) if "request_id" in line]


TENSORFLOW_CPP_LINE = re.compile(
    r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog"
)


@pytest.mark.slow
def test_the_server_log_is_json_lines_unless_told_otherwise(model_base, test_images, tmp_path):
    """uvicorn's lines were plain text among the facade's JSON ones."""
    import json

    log = tmp_path / "serve.log"
    with LiveServer(model_base, stderr=log) as server:
        answer = httpx.post(f"{server.url}/predict", files={"file": ("a.png", test_images[0])})
        assert answer.status_code == 200
        for _ in range(3):  # a client's malformed body: its 400, not a log line per request
            bad = httpx.post(
                f"{server.url}/predict",
                content=b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--XyZ',
                headers={"Content-Type": "multipart/form-data; boundary=XyA"},
            )
            assert bad.status_code == 400, bad.text
    lines = log.read_text().splitlines()
    objects = [json.loads(line) for line in lines if line.startswith("{")]
    # Not Python's logging: TensorFlow's C++ lines (TF_CPP_MIN_LOG_LEVEL) and the command's
    # own last word on SIGTERM.
    others = [line for line in lines if not line.startswith("{")]
    assert all(TENSORFLOW_CPP_LINE.match(line) for line in others[:-1]), others
    assert others[-1] == "tf-alexnet: terminated"
    uvicorn = [line for line in objects if line.get("logger") == "uvicorn.error"]
    assert uvicorn[0]["message"].startswith("Started server process [")
    assert any(line["message"].startswith("Uvicorn running on http://") for line in uvicorn)
    assert uvicorn[-1]["message"].startswith("Finished server process [")
    assert {line["level"] for line in uvicorn} == {"INFO"}
    assert all(line["time"].endswith("+00:00") for line in uvicorn)
    assert any(line.get("path") == "/predict" for line in objects)  # the request log, as before
    assert not [line for line in objects if line.get("logger", "").startswith("python_multipart")]
    text_log = tmp_path / "text.log"
    with LiveServer(model_base, env={"TF_ALEXNET_SERVE_LOG_FORMAT": "text"}, stderr=text_log):
        pass
    assert "INFO:     Started server process [" in text_log.read_text()


def test_a_misspelt_setting_is_a_warning_in_the_log_not_ignored_silently(model_base, tmp_path):
    """`TF_ALEXNET_SERVE_MAX_FILE=3` left MAX_FILES at its default without a word."""
    log = tmp_path / "serve.log"
    env = {
        "TF_ALEXNET_SERVE_MAX_FILE": "3",
        "TF_ALEXNET_SERVE_NO_SUCH_THING": "1",
        "tf_alexnet_serve_max_top_k": "4",  # any case names a setting, as pydantic reads it
    }
    with LiveServer(model_base, env=env, stderr=log) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    objects = json_log_lines(log)
    warnings = [line for line in objects if line.get("logger") == "tf_alexnet_serving.settings"]
    assert [(line["level"], line["message"]) for line in warnings] == [
        (
            "WARNING",
            "TF_ALEXNET_SERVE_MAX_FILE names no setting and is ignored. "
            "Did you mean TF_ALEXNET_SERVE_MAX_FILES?",
        ),
        ("WARNING", "TF_ALEXNET_SERVE_NO_SUCH_THING names no setting and is ignored."),
    ]


def test_json_log_takes_tensorflows_and_other_libraries_warnings():
    script = (
        "import logging, logging.config\n"
        "import tensorflow as tf\n"
        "from tf_alexnet_serving.logs import log_config\n"
        "import sys\n"
        "tf.get_logger().warning('retracing, say')\n"  # TensorFlow's logger, its own handler
        "logging.config.dictConfig(log_config('json'))\n"
        "print('---', file=sys.stderr, flush=True)\n"
        "tf.get_logger().warning('retracing again')\n"
        "logging.getLogger('httpx').warning('a library warns')\n"
        "logging.getLogger('httpx').info('not shown: below WARNING')\n"
        "logging.getLogger('python_multipart').warning('not shown: a bad client body, its 400')\n"
        "logging.getLogger('python_multipart').error('shown: an error of its own')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    after = lines[len(lines) - lines[::-1].index("---") :]
    import json

    assert [(json.loads(line)["logger"], json.loads(line)["message"]) for line in after] == [
        ("tensorflow", "retracing again"),
        ("httpx", "a library warns"),
        ("python_multipart", "shown: an error of its own"),
    ]


def test_json_log_lines_keep_a_traceback_on_the_line():
    import json
    import logging

    from tf_alexnet_serving.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "uvicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Exception in %s",
            ("ASGI",),
            sys.exc_info(),
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["level"], parsed["logger"], parsed["message"]) == (
        "ERROR",
        "uvicorn.error",
        "Exception in ASGI",
    )
    assert parsed["exception"].startswith("Traceback") and parsed["exception"].endswith(
        "ValueError: boom"
    )


STALLED_UPLOAD = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000\r\n\r\n\x89PNG"
)


def test_an_upload_the_client_abandons_is_one_499_line_without_a_traceback(model_base, tmp_path):
    """A client that closes the connection mid-upload was a 500 in the metrics, with a
    65-line traceback in the log."""
    import socket

    log = tmp_path / "serve.log"
    with LiveServer(model_base, stderr=log) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(STALLED_UPLOAD)
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while not any(line["path"] == "/predict" for line in _log_lines(log)):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert 'tf_alexnet_requests_total{route="/predict",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    assert [line["status"] for line in _log_lines(log) if line["path"] == "/predict"] == [499]
    assert "Traceback" not in log.read_text()


def test_a_stalled_upload_gets_408_and_never_holds_up_the_shutdown(model_base, tmp_path):
    """A client that stops sending its body: uvicorn waited for it for ever on SIGTERM."""
    import json
    import socket

    log = tmp_path / "serve.log"
    env = {
        "TF_ALEXNET_SERVE_BODY_TIMEOUT_S": "5",
        "TF_ALEXNET_SERVE_SHUTDOWN_TIMEOUT_S": "1",
        "TF_ALEXNET_SERVE_CORS_ORIGINS": '["http://app.example"]',
    }
    with LiveServer(model_base, env=env, stderr=log) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            start = time.monotonic()
            sock.sendall(STALLED_UPLOAD)
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
        assert 5 <= time.monotonic() - start < 12
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
        assert json.loads(body) == {"detail": "The whole body did not arrive within 5 s."}

        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            # From a browser app on another origin, which read no answer without CORS's headers.
            sock.sendall(
                STALLED_UPLOAD.replace(b"Host: x\r\n", b"Host: x\r\nOrigin: http://app.example\r\n")
            )
            time.sleep(0.5)  # the app is waiting for the body
            start = time.monotonic()
            server.process.terminate()
            try:
                answer = sock.recv(65536)  # the answer SHUTDOWN_TIMEOUT_S gave
                answered = time.monotonic() - start
                while chunk := sock.recv(65536):  # the rest, until the server closes
                    answer += chunk
                server.process.wait(timeout=20)  # the shutdown is not held up for ever
            finally:
                server.process.kill()
    assert server.process.returncode == 128 + signal.SIGTERM
    # SHUTDOWN_TIMEOUT_S ended it (1 s, plus a busy machine's delays), not the body's timeout
    # (4.5 s after SIGTERM), which would have answered 408. Timed to the answer, not to the
    # process's exit, which took 6.2 s under load (the teardown after the answer).
    assert answered < 4.5, answered
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert answer.endswith(b'{"detail":"The server shut down before the request ended."}')
    assert b"access-control-allow-origin: http://app.example" in answer.lower()
    text = log.read_text()
    assert "timeout graceful shutdown exceeded" in text and "Traceback" not in text
    assert [line["status"] for line in _log_lines(log) if line["path"] == "/predict"] == [408, 503]


def metadata_names(port):
    return httpx.get(f"http://127.0.0.1:{port}/v1/metadata").json()["class_names"]


WITHOUT_FASTAPI = """
import argparse, sys

sys.modules["fastapi"] = None  # as if the serve extra were not installed: imports fail
try:
    import tf_alexnet_serving
except ModuleNotFoundError as err:
    print(type(err).__name__, err)
from tf_alexnet import cli

try:
    cli.run_serve(argparse.Namespace(host="", port=0, model_base_path=None, model_name=None))
except ValueError as err:
    print(err)
"""


def test_without_the_serve_extra_importing_the_facade_says_what_to_install():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_FASTAPI], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    hint = "Serving needs the 'serve' extra: pip install 'tf-alexnet[serve]' (import of fastapi"
    imported, served = result.stdout.splitlines()[-2:]
    assert imported.startswith(f"MissingServeExtra {hint}")
    assert served.startswith(hint) and served.count("pip install") == 1  # the CLI's one line


def test_serve_without_models_is_a_clear_error(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("serve", "--model-base-path", str(tmp_path))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("tf-alexnet: error: No exported SavedModel")
    )


@pytest.mark.slow
def test_serve_refuses_a_model_that_is_not_an_export_in_one_line(tmp_path):
    """A Keras `model.export()` served with the local backend ended in a KeyError traceback
    from uvicorn's start-up, exit status 3."""
    from tests.conftest import run_cli
    from tf_alexnet.model import AlexNet

    foreign = tmp_path / "foreign" / "alexnet" / "1"
    AlexNet(input_shape=(28, 28, 1), classes=3, variant="mini", width=0.25).export(
        str(foreign), verbose=False
    )
    result = run_cli("serve", "--model-base-path", str(tmp_path / "foreign"), timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tf-alexnet: error: {str(foreign)!r} is not a tf-alexnet export: its 'serving_default' "
        "signature takes 'image' and gives 'output_0', where an export takes 'image_bytes' and "
        "gives 'probabilities'. Export the model with `tf-alexnet export`."
    )
    broken = tmp_path / "broken" / "alexnet" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    result = run_cli("serve", "--model-base-path", str(tmp_path / "broken"), timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"tf-alexnet: error: {str(broken / 'saved_model.pb')!r} is not a SavedModel (it does "
        "not parse)."
    )


@pytest.mark.parametrize("name", ["../models/alexnet", "a/b", "..", ".", ""])
def test_a_model_name_is_a_folder_name(name):
    """`--model-name ../models/alexnet` served a folder outside the base path."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="should be a folder name, without '/'"):
        Settings(model_name=name)
    assert Settings(model_name="fashion-v2.1_b").model_name == "fashion-v2.1_b"


def test_a_tf_serving_backend_chosen_without_its_address_is_one_line():
    """It started, then ended in a ValueError traceback from uvicorn's start-up (exit 3)."""
    from tests.conftest import run_cli

    for backend, variable in (
        ("tfserving-rest", "TF_ALEXNET_SERVE_TFSERVING_REST_URL"),
        ("tfserving-grpc", "TF_ALEXNET_SERVE_TFSERVING_GRPC_ADDRESS"),
    ):
        result = run_cli("serve", env={"TF_ALEXNET_SERVE_BACKEND": backend}, timeout=120)
        assert result.returncode == 2, result.stderr[-3000:]
        setting = variable.removeprefix("TF_ALEXNET_SERVE_").lower()
        assert result.stderr.strip().splitlines() == [
            f"tf-alexnet: error: Invalid serving settings: backend {backend!r} needs {setting} "
            f"({variable})"
        ]


def test_serve_with_a_model_name_not_in_the_base_path_names_those_there(model_base):
    from tests.conftest import run_cli

    result = run_cli("serve", "--model-base-path", str(model_base), "--model-name", "shoes")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"tf-alexnet: error: No model named 'shoes' in {str(model_base)!r}; it holds 'alexnet'. "
        "Pass --model-name (or set TF_ALEXNET_SERVE_MODEL_NAME)."
    )


def test_serve_where_it_cannot_listen_is_one_line_before_the_model_loads(model_base):
    import socket

    from tests.conftest import run_cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run_cli("serve", "--model-base-path", str(model_base), "--port", str(port))
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines()[-1] == (
        f"tf-alexnet: error: Cannot listen on 127.0.0.1:{port}: Address already in use."
    )
    assert "application startup" not in taken.stderr  # refused before loading anything
    unknown = run_cli(  # the default port, named: no name resolves, so nothing binds it
        "serve", "--model-base-path", str(model_base), "--host", "no-such.invalid", "--port", "8000"
    )
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip()
        .splitlines()[-1]
        .startswith("tf-alexnet: error: Cannot listen on no-such.invalid:8000: ")
    )


def _rss_mb(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


SOAK_SECONDS = 20
SOAK_MEMORY_GROWTH_MB = 150


@pytest.mark.slow
def test_64_concurrent_clients_soak(model_base, test_images):
    """64 clients for a bounded time: no errors, and server memory grows less than the bound."""
    with LiveServer(model_base) as server:
        url = server.url

        async def client(http, stop_at, counts):
            files = {"file": ("a.png", test_images[3], "image/png")}
            while time.monotonic() < stop_at:
                response = await http.post("/predict", files=files)
                counts[response.status_code] = counts.get(response.status_code, 0) + 1

        async def soak(seconds):
            counts = {}
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
                stop_at = time.monotonic() + seconds
                await asyncio.gather(*(client(http, stop_at, counts) for _ in range(64)))
            return counts

        asyncio.run(soak(3))  # warm up: allocator and thread pools reach their working size
        before = _rss_mb(server.process.pid)
        counts = asyncio.run(soak(SOAK_SECONDS))
        growth = _rss_mb(server.process.pid) - before
        assert set(counts) == {200}, counts
        assert counts[200] > 64
        assert growth < SOAK_MEMORY_GROWTH_MB, f"server memory grew by {growth:.0f} MB"
        lines = httpx.get(f"{url}/metrics").text.splitlines()
        single = next(
            line for line in lines if line.startswith('tf_alexnet_batch_size_bucket{le="1.0"}')
        )
        calls = next(line for line in lines if line.startswith("tf_alexnet_batch_size_count"))
        # Concurrent requests were micro-batched: some model calls served several images.
        assert float(single.split()[1]) < float(calls.split()[1])


def test_serve_settings_mistakes_are_one_line(model_base):
    from tests.conftest import run_cli

    unknown = run_cli(
        "serve", "--model-base-path", str(model_base), env={"TF_ALEXNET_SERVE_MODEL_VERSION": "9"}
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        f"tf-alexnet: error: No exported version 9 in '{model_base / 'alexnet'}'."
    )
    bad = run_cli("serve", env={"TF_ALEXNET_SERVE_MAX_BATCH_SIZE": "zero"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "tf-alexnet: error: Invalid serving setting max_batch_size: Input should be a valid "
        "integer, unable to parse string as an integer. Received: "
        "TF_ALEXNET_SERVE_MAX_BATCH_SIZE='zero'"
    )


def test_cors_origins_are_compared_as_browsers_write_them(model_base):
    """CORS compares the Origin header character for character: an origin copied from the
    address bar (`http://app.example/`), in capitals, or with its default port matched no
    request, and every call from it was refused ("Disallowed CORS origin.")."""
    written = ["http://app.example/", "HTTPS://Secure.Example:443", "http://[::1]:8080/", "*"]
    assert Settings(cors_origins=written).cors_origins == [
        "http://app.example", "https://secure.example", "http://[::1]:8080", "*"
    ]  # fmt: skip
    settings = Settings(model_base_path=str(model_base), cors_origins=["http://app.example/"])
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/predict",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200, preflight.text
        answer = client.get("/healthz", headers={"Origin": "http://app.example"})
        assert answer.headers["access-control-allow-origin"] == "http://app.example"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TFSERVING_REST_URL": "127.0.0.1:8501"},
            "Invalid serving setting tfserving_rest_url: should be an http:// or https:// URL. "
            "Received: '127.0.0.1:8501'",
        ),
        (
            {"TFSERVING_REST_URL": "http://tfserving:8501/v1/models/alexnet"},
            "Invalid serving setting tfserving_rest_url: should be TF Serving's root (such as "
            "http://tfserving:8501), without /v1/models/...: the facade adds it. Received: "
            "'http://tfserving:8501/v1/models/alexnet'",
        ),
        (
            {"TFSERVING_GRPC_ADDRESS": "http://tfserving:8500"},
            "Invalid serving setting tfserving_grpc_address: should be host:port, without "
            "http://. Received: 'http://tfserving:8500'",
        ),
        (
            {"TFSERVING_REST_URL": "http://a:8501", "TFSERVING_GRPC_ADDRESS": "a:8500"},
            "Invalid serving settings: both tfserving_rest_url and tfserving_grpc_address are "
            "set: set backend (TF_ALEXNET_SERVE_BACKEND) to tfserving-rest or tfserving-grpc "
            "to pick one",
        ),
        (
            {"MODEL_VERSION": "2", "MODEL_LABEL": "stable"},
            "Invalid serving settings: model_version and model_label both pick the version "
            "served: set one. Received: model_version=2, model_label='stable'",
        ),
        (
            {"MODEL_LABEL": "stable"},  # the local backend served the newest version instead
            "Invalid serving settings: model_label picks a version by TF Serving's labels, which "
            "the local backend does not have: set model_version, or a TF Serving backend. "
            "Received: model_label='stable'",
        ),
        (
            {"API_KEY": "clé secrète"},
            "Invalid serving setting api_key: should be printable ASCII without leading or "
            "trailing spaces (it is sent as the X-API-Key header). Received: a key of 11 "
            "characters with 'é'",
        ),
        (
            {"API_KEY": "s3cret\n"},
            "Invalid serving setting api_key: should be printable ASCII without leading or "
            "trailing spaces (it is sent as the X-API-Key header). Received: a key of 7 "
            "characters with '\\n'",
        ),
        (
            {"CORS_ORIGINS": '["app.example"]'},
            "Invalid serving setting cors_origins: should be origins such as "
            "https://app.example or http://localhost:3000 (scheme, host and port alone), or *. "
            "Received: 'app.example'",
        ),
        (
            {"CORS_ORIGINS": '["http://app.example/page"]'},
            "Invalid serving setting cors_origins: should be origins such as "
            "https://app.example or http://localhost:3000 (scheme, host and port alone), or *. "
            "Received: 'http://app.example/page'",
        ),
        (
            {"TIMEOUT_S": "inf"},
            "Invalid serving setting timeout_s: Input should be a finite number. Received: "
            "TF_ALEXNET_SERVE_TIMEOUT_S='inf'",
        ),
        (
            {"MAX_BATCH_WAIT_MS": "1e300"},
            "Invalid serving setting max_batch_wait_ms: Input should be less than or equal to "
            "86400000. Received: TF_ALEXNET_SERVE_MAX_BATCH_WAIT_MS='1e300'",
        ),
        (
            {"SHUTDOWN_TIMEOUT_S": "99999999"},
            "Invalid serving setting shutdown_timeout_s: Input should be less than or equal to "
            "86400. Received: TF_ALEXNET_SERVE_SHUTDOWN_TIMEOUT_S='99999999'",
        ),
        (
            {"HEADER_TIMEOUT_S": "1e300"},
            "Invalid serving setting header_timeout_s: Input should be less than or equal to "
            "86400. Received: TF_ALEXNET_SERVE_HEADER_TIMEOUT_S='1e300'",
        ),
        *(
            (
                {"MODEL_BASE_PATH": blank},
                "Invalid serving setting model_base_path: should be the folder that holds the "
                "model's folder, such as models; it is empty (TF_ALEXNET_SERVE_MODEL_BASE_PATH "
                "or --model-base-path), which would mean the current folder. "
                f"Received: {blank!r}",
            )
            for blank in ("", " ")  # the current folder, silently
        ),
        # Blank (a Compose variable left unset), or mistakes found only by the first request:
        # no port (gRPC dialled 443), a port out of range, a query the paths came after.
        *(
            (
                {"TFSERVING_GRPC_ADDRESS": address},
                "Invalid serving setting tfserving_grpc_address: should be host:port, such as "
                "tfserving:8500 (or a gRPC target such as dns:///tfserving:8500 or "
                f"unix:/run/tfserving.sock). Received: {address!r}",
            )
            for address in ("", "tfserving", " tfserving:8500", "tfserving:0", "tfserving:99999")
        ),
        *(
            (
                {"TFSERVING_REST_URL": url},
                "Invalid serving setting tfserving_rest_url: should be an http:// or https:// URL "
                "with a port from 1 to 65535, without query or fragment, such as "
                f"http://tfserving:8501. Received: {url!r}",
            )
            for url in ("http://tfserving:99999", "http://tfserving:0", "http://tfserving:8501?a=1")
        ),
        *(
            (
                {"TFSERVING_REST_URL": "http://tfserving:8501", "MODEL_LABEL": label},
                "Invalid serving setting model_label: should be a version label such as stable or "
                f"canary (not empty, without '/' or ':'). Received: {label!r}",
            )
            for label in ("", " ", "a/b")
        ),
        *(
            (
                {"CLASS_NAMES": names},  # started, then answered every request 503
                "Invalid serving setting class_names: should be the model's class names in "
                "class-id order, none of them blank (or unset, to use the model's own names). "
                f"Received: {received}",
            )
            for names, received in (("[]", "[]"), ('["a", " "]', "['a', ' ']"))
        ),
        (
            {"MAX_BODY_BYTES": "2000000", "MAX_UPLOAD_BYTES": "1000000"},  # 503s, "retry later"
            "Invalid serving settings: max_upload_bytes (TF_ALEXNET_SERVE_MAX_UPLOAD_BYTES) should "
            "be at least max_body_bytes (TF_ALEXNET_SERVE_MAX_BODY_BYTES=2000000): a body between "
            "them could never be held. Received: max_upload_bytes=1000000",
        ),
        (
            {"API_KEY": ""},  # served every request without a key
            "Invalid serving setting api_key: is empty, which would serve without a key: set a "
            "key, or unset TF_ALEXNET_SERVE_API_KEY to serve without one. Received: ''",
        ),
        (
            {"TFSERVING_GRPC_ADDRESS": "tfserving:8500", "GRPC_MAX_MESSAGE_BYTES": "1048576"},
            "Invalid serving settings: grpc_max_message_bytes "
            "(TF_ALEXNET_SERVE_GRPC_MAX_MESSAGE_BYTES) should be at least 10,486,791 for a body "
            "of max_body_bytes (TF_ALEXNET_SERVE_MAX_BODY_BYTES=10485760) to reach TF Serving "
            "as one image: raise it, or lower MAX_BODY_BYTES. Received: "
            "grpc_max_message_bytes=1048576",
        ),
    ],
)
def test_tf_serving_addresses_and_choices_are_checked_at_start(env, message, monkeypatch):
    """Each of these started, then served 503s for ever, or ignored a setting (a label beside
    a version; the gRPC address beside the URL), or broke every gRPC deadline (inf), or asked
    for an API key no browser can send (non-ASCII) or no client would type (a newline)."""
    from tf_alexnet_serving.cli import serve

    from tf_alexnet.errors import UserError

    for accepted in ("https://tfserving:8501", "http://gateway/tfserving"):
        assert Settings(tfserving_rest_url=accepted).tfserving_rest_url == accepted
    for target in (
        "tfserving:8500",
        "dns:///tfserving:8500",
        "unix:/run/tfserving.sock",
        "[::1]:8500",
        "ipv4:10.0.0.1:8500",
    ):
        assert Settings(tfserving_grpc_address=target).resolved_backend() == "tfserving-grpc"

    def started(*args, **kwargs):
        raise AssertionError("served with settings it cannot use")

    monkeypatch.setattr("tf_alexnet_serving.cli.uvicorn.run", started)
    for name, value in env.items():
        monkeypatch.setenv(f"TF_ALEXNET_SERVE_{name}", value)
    with pytest.raises(UserError) as refused:
        serve("127.0.0.1", 0)
    assert str(refused.value) == message


def test_micro_batcher_bounds_its_queue_and_times_out():
    import threading

    ran = []
    running, release = threading.Event(), threading.Event()

    def run(items):
        ran.extend(items)
        running.set()
        release.wait(5)
        return items

    async def main():
        batcher = MicroBatcher(run, max_batch_size=1, max_wait_s=0, max_queue=2, timeout_s=0.2)
        batcher.start()
        try:
            first = asyncio.create_task(batcher.submit("running"))
            # "running" is in the model call; two more can wait
            assert await asyncio.to_thread(running.wait, 30)
            waiting = [asyncio.create_task(batcher.submit(f"queued{i}")) for i in range(2)]
            await asyncio.sleep(0)
            over = batcher.submit("over")
            with pytest.raises(QueueFull):
                over.send(None)  # refused at once: before the submission's first wait
            results = await asyncio.gather(first, *waiting, return_exceptions=True)
            release.set()
            assert all(isinstance(result, DeadlineExceeded) for result in results), results
            assert await batcher.submit("later") == "later"  # recovered
        finally:
            release.set()
            await batcher.stop()

    asyncio.run(main())
    assert ran == ["running", "later"]  # the timed-out queued items never reached the model


def _zeros_png(side):
    header = b"\x89PNG\r\n\x1a\n"

    def chunk(kind, data):
        return (
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    ihdr = side.to_bytes(4, "big") * 2 + b"\x08\x00\x00\x00\x00"
    rows = zlib.compress(b"\x00" * (side + 1) * side, 9)
    return header + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.slow
def test_overload_is_a_quick_503_or_504_and_the_server_recovers(
    model_base, test_images, monkeypatch
):
    """Far past capacity, every request gets a quick answer: 200, 503 with Retry-After beyond
    the queue, or 504 after the timeout; afterwards the server answers normally."""
    # TIMEOUT_S leaves a loaded host's model call time to answer 200 (at 0.3 s, under load,
    # no request of 190 did); a queue of 16 still makes 504s: its last big image waits for
    # 17 decodes of 20 MP, over 1 s wherever one takes over 0.06 s (0.17-0.46 s here).
    for name, value in {"MAX_QUEUE": "16", "MAX_BATCH_SIZE": "1", "TIMEOUT_S": "1"}.items():
        monkeypatch.setenv(f"TF_ALEXNET_SERVE_{name}", value)
    big = _zeros_png(4500)  # cheap to send, slow to decode: the model is the bottleneck

    async def burst(url, image, count):
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

            async def one():
                start = time.monotonic()
                response = await http.post("/predict", files={"file": ("a.png", image)})
                return response, time.monotonic() - start

            return await asyncio.gather(*(one() for _ in range(count)))

    with LiveServer(model_base) as server:
        warm = httpx.post(f"{server.url}/predict", files={"file": ("a.png", test_images[0])})
        assert warm.status_code == 200, warm.text
        answers = asyncio.run(burst(server.url, test_images[0], 150))
        answers += asyncio.run(burst(server.url, big, 40))
        statuses = [response.status_code for response, _ in answers]
        assert set(statuses) <= {200, 503, 504}, statuses
        assert 200 in statuses and 503 in statuses and 504 in statuses, statuses
        for response, seconds in answers:
            # Unbounded, the last of 40 big images would wait for all the others' decoding;
            # bounded, the server answers within TIMEOUT_S (the rest is a loaded host's noise).
            assert seconds < 20, seconds
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1"
                assert "Overloaded" in response.json()["detail"]
            elif response.status_code == 504:
                assert "in time" in response.json()["detail"]
        # Recovery: once the images already in the model call are done (seconds at most).
        deadline = time.monotonic() + 15
        while True:
            after = httpx.post(f"{server.url}/predict", files={"file": ("a.png", test_images[0])})
            if after.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert after.status_code == 200, after.text


def test_request_id_header_and_one_json_log_line_per_request(client, test_images):
    import json
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tf_alexnet_serving.requests")
    logger.addHandler(handler)
    try:
        files = [
            ("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(test_images[:2])
        ]
        kept = client.post("/predict", files=files, headers={"X-Request-ID": "trace-42.a:b"})
        replaced = client.post("/predict", json={"instances": []}, headers={"X-Request-ID": "<x>"})
        made = client.get("/healthz")
    finally:
        logger.removeHandler(handler)
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    for response in (replaced, made):  # new ids, each its own
        assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
    assert replaced.headers["x-request-id"] != made.headers["x-request-id"]
    lines = [json.loads(record.getMessage()) for record in records]
    assert [(line["request_id"], line["status"], line["images"]) for line in lines] == [
        ("trace-42.a:b", 200, 2),
        (replaced.headers["x-request-id"], 400, 0),
        (made.headers["x-request-id"], 200, 0),
    ]
    assert lines[0]["path"] == "/predict" and lines[0]["method"] == "POST"
    assert lines[0]["model"] == "alexnet" and lines[0]["model_version"] == 1
    assert all(line["latency_ms"] > 0 for line in lines)
    # When, in UTC to the millisecond, as uvicorn's JSON lines (a shipper reads both alike).
    for line in lines:
        logged = datetime.datetime.fromisoformat(line["time"])
        assert logged.utcoffset() == datetime.timedelta(0) and line["time"].endswith("+00:00")
        assert abs(logged - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)
    assert next(iter(lines[0])) == "time"


def test_openapi_gives_the_packages_version(monkeypatch):
    """`/openapi.json` said FastAPI's default "0.1.0" whatever the package's version."""
    from tf_alexnet_serving import app

    monkeypatch.setattr(app, "__version__", "9.8.7")
    assert create_app(Settings()).openapi()["info"]["version"] == "9.8.7"


def test_openapi_declares_every_answer_error_and_the_api_key():
    """Clients can be generated from the document: typed 200s, typed errors, the key scheme."""
    spec = create_app(Settings()).openapi()
    schemas = spec["components"]["schemas"]
    assert {"PredictResponse", "Prediction", "TopClass", "ErrorBody", "Ready", "Metadata"} <= set(
        schemas
    )
    assert schemas["ErrorBody"]["required"] == ["detail"]

    def ref(path: str, method: str, status: str) -> str:
        content = spec["paths"][path][method]["responses"][status]["content"]
        return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]

    assert ref("/predict", "post", "200") == "PredictResponse"
    assert ref("/readyz", "get", "200") == "Ready"
    assert ref("/v1/metadata", "get", "200") == "Metadata"
    assert ref("/healthz", "get", "200") == "Health"
    for status in ("400", "401", "408", "413", "415", "422", "500", "503", "504"):
        assert ref("/predict", "post", status) == "ErrorBody", status
    assert "Retry-After" in spec["paths"]["/predict"]["post"]["responses"]["503"]["headers"]
    # What the server reads is declared: `filename` (an image as the whole body), the bounds
    # of a request's images, TF Serving's named row, and no other keys beside b64.
    predict = spec["paths"]["/predict"]["post"]
    assert "filename" in [parameter["name"] for parameter in predict["parameters"]]
    instances = predict["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "instances"
    ]
    assert (instances["minItems"], instances["maxItems"]) == (1, 16)
    plain, named = instances["items"]["oneOf"]
    assert plain["additionalProperties"] is False and list(named["properties"]) == ["image_bytes"]
    files = predict["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert files["file"]["maxItems"] == 16
    assert (
        create_app(Settings(max_files=3)).openapi()["paths"]["/predict"]["post"]["requestBody"][
            "content"
        ]["multipart/form-data"]["schema"]["properties"]["file"]["maxItems"]
        == 3
    )
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body, a list
    assert ref("/readyz", "get", "503") == "ErrorBody"
    security = spec["components"]["securitySchemes"]["APIKeyHeader"]
    assert security == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Required when the server sets TF_ALEXNET_SERVE_API_KEY.",
    }
    assert spec["paths"]["/predict"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_every_setting_is_in_the_readme_table():
    """The README's settings table names every TF_ALEXNET_SERVE_* setting."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    table = {name for row in re.findall(r"^\| (`.+?) \|", readme, re.M) for name in row.split("`")}
    missing = [name for name in Settings.model_fields if name.upper() not in table]
    assert not missing, f"settings missing from the README table: {missing}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TF_ALEXNET_SERVE_CORS_ORIGINS": "https://app.example"},
            "Invalid serving setting cors_origins: TF_ALEXNET_SERVE_CORS_ORIGINS should be a "
            'JSON list, such as ["https://app.example", "http://localhost:3000"]. Received: '
            "'https://app.example'",
        ),
        (
            {"TF_ALEXNET_SERVE_CLASS_NAMES": "T-shirt,Trouser"},
            "Invalid serving setting class_names: TF_ALEXNET_SERVE_CLASS_NAMES should be a "
            'JSON list, such as ["T-shirt/top", "Trouser", ...]. Received: \'T-shirt,Trouser\'',
        ),
        (
            {"TF_ALEXNET_SERVE_CORS_ORIGINS": '["http://[::1:8080"]'},
            "Invalid serving setting cors_origins: should be origins such as "
            "https://app.example or http://localhost:3000 (scheme, host and port alone), or *. "
            "Received: 'http://[::1:8080'",
        ),
    ],
    ids=["origin not in a list", "names not in a list", "unclosed IPv6 origin"],
)
def test_list_settings_written_otherwise_are_one_line_naming_the_variable(env, message):
    """A list setting not written as JSON was refused as `error parsing value for field
    "cors_origins" from source "EnvSettingsSource"` (naming neither the variable nor the
    form it takes) or "Input should be a valid list"; an origin with an unclosed IPv6
    bracket, as "Invalid IPv6 URL" without the origin."""
    from tests.conftest import run_cli

    refused = run_cli("serve", env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"tf-alexnet: error: {message}"]


@pytest.mark.slow
def test_a_model_or_version_folder_given_as_the_base_path_names_the_one_to_pass(model_base):
    """`--model-base-path models/alexnet` (the folder `tf-alexnet export` writes versions in)
    was refused as "No exported SavedModel at 'models/alexnet/alexnet'", with no word of the
    base path one level up."""
    from tests.conftest import run_cli

    for given, what in ((model_base / "alexnet", "a model folder (versions 1)"),
                        (model_base / "alexnet" / "1", "a version folder")):  # fmt: skip
        refused = run_cli("serve", "--model-base-path", str(given))
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"tf-alexnet: error: {str(given)!r} is {what}, not a model base path (which holds "
            f"models, each a folder of versions): pass --model-base-path {str(model_base)!r} "
            "(or set TF_ALEXNET_SERVE_MODEL_BASE_PATH)."
        ]
    relative = run_cli("serve", "--model-base-path", ".", cwd=str(model_base / "alexnet"))
    assert relative.returncode == 2
    assert f"pass --model-base-path {str(model_base)!r} (" in relative.stderr


def test_a_run_directory_given_as_the_base_path_says_to_export_it(trained_run):
    """`serve --model-base-path runs/x` said only "No exported SavedModel at 'runs/x/alexnet'"."""
    from tests.conftest import run_cli

    refused = run_cli("serve", "--model-base-path", str(trained_run))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"tf-alexnet: error: {str(trained_run)!r} is a training run, not a model base path: "
        f"export it first (tf-alexnet export {str(trained_run)!r} writes models/alexnet/1), "
        "then pass --model-base-path models (or set TF_ALEXNET_SERVE_MODEL_BASE_PATH)."
    ]


def test_a_second_ctrl_c_with_a_request_in_flight_quits_without_a_traceback(model_base, tmp_path):
    """The first Ctrl-C waits for requests in progress; the second forces uvicorn to quit,
    which cancelled the lifespan waiting for its shutdown: Starlette reported that as a failed
    shutdown and uvicorn logged it as an ERROR with a CancelledError traceback."""
    import json
    import socket

    log = tmp_path / "serve.log"
    waiting = "Waiting for connections to close. (CTRL+C to force quit)"  # uvicorn's
    with (
        LiveServer(model_base, stderr=log) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as upload,
    ):
        upload.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
        )
        # Sent once the app reads the body: the request is in flight.
        assert upload.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        upload.sendall(b"abc")  # and the rest never comes
        server.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30  # the first Ctrl-C is handled: uvicorn waits
        while waiting not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        server.process.send_signal(signal.SIGINT)
        # 130: uvicorn raises the SIGINT again once stopped (0 where SIGINT is ignored)
        assert server.process.wait(timeout=30) in (0, 130)
        assert upload.recv(65536).startswith(b"HTTP/1.1 503 ")
    text = log.read_text()
    assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    levels = [json.loads(line).get("level") for line in text.splitlines() if line[:1] == "{"]
    assert "ERROR" not in levels
