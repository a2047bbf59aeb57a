"""The facade's TF Serving REST backend against a server that follows TF Serving's protocol."""

import base64
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from tf_alexnet_serving import Settings, create_app

from tests.tfserving_rest_server import TFServingREST
from tf_alexnet.export import export


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tfserving(trained_run, test_images, tmp_path_factory):
    """The test TF Serving on a loopback port, serving versions 1 and 2 (label 'stable' = 1)."""
    base = tmp_path_factory.mktemp("tfserving")
    export(trained_run, base, sample_images=test_images[:2])
    export(trained_run, base, sample_images=test_images[:2])
    server = uvicorn.Server(
        uvicorn.Config(
            TFServingREST(base, "alexnet", {"stable": 1}).app,
            host="127.0.0.1",
            port=_free_port(),
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_test_server_follows_the_documented_protocol(tfserving, test_images):
    status = httpx.get(f"{tfserving}/v1/models/alexnet").json()
    assert status == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    row = httpx.post(
        f"{tfserving}/v1/models/alexnet/labels/stable:predict",
        json={"instances": [{"b64": base64.b64encode(test_images[0]).decode()}]},
    ).json()
    assert set(row["predictions"][0]) == {
        "probabilities",
        "class_id",
        "class_name",
        "top_k_ids",
        "top_k_scores",
    }
    assert isinstance(row["predictions"][0]["class_name"], str)
    missing = httpx.get(f"{tfserving}/v1/models/half")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Servable not found for request: Latest(half)"}
    both = httpx.post(
        f"{tfserving}/v1/models/alexnet:predict", json={"instances": [], "inputs": []}
    )
    assert both.status_code == 400 and "error" in both.json()


def _client(url, **settings):
    return TestClient(create_app(Settings(tfserving_rest_url=url, **settings)))


def test_rest_backend_predicts_like_the_local_one(tfserving, trained_run, test_images, tmp_path):
    files = {"file": ("shirt.png", test_images[0], "image/png")}
    with _client(tfserving) as remote:
        assert remote.get("/readyz").json() == {"status": "ready", "model": "alexnet", "version": 2}
        answer = remote.post("/predict", files=files).json()
    base = tmp_path / "local"
    export(trained_run, base, sample_images=test_images[:1])
    with TestClient(create_app(Settings(model_base_path=str(base)))) as local:
        expected = local.post("/predict", files=files).json()
    assert answer["model"] == {"name": "alexnet", "version": 2}
    got, want = answer["predictions"][0], expected["predictions"][0]
    assert got["class_id"] == want["class_id"] and got["class_name"] == want["class_name"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_version_and_label_selection(tfserving, test_images):
    files = {"file": ("a.png", test_images[0], "image/png")}
    with _client(tfserving, model_version=1) as client:
        assert client.get("/readyz").json()["version"] == 1
        assert client.post("/predict", files=files).json()["model"]["version"] == 1
    with _client(tfserving, model_label="stable") as client:
        assert client.get("/readyz").json()["version"] == 1
    with _client(tfserving, model_version=7) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/predict", files=files)
        assert response.status_code == 503
        assert "Servable not found for request: Specific(alexnet, 7)" in response.json()["detail"]


def test_upstream_failures_map_to_clear_answers(tfserving, test_images):
    files = {"file": ("a.png", test_images[0], "image/png")}
    with _client(f"http://127.0.0.1:{_free_port()}") as unreachable:
        assert unreachable.get("/readyz").status_code == 503
        response = unreachable.post("/predict", files=files)
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
    with _client(tfserving, timeout_s=0.0001) as impatient:
        response = impatient.post("/predict", files=files)
        assert response.status_code == 504 and "in time" in response.json()["detail"]
    with _client(tfserving) as client:
        truncated = test_images[1][:60]
        response = client.post("/predict", files={"file": ("cut.png", truncated, "image/png")})
        assert response.status_code == 400
        assert response.json()["detail"] == "cut.png: corrupt or truncated image"
