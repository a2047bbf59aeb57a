"""The facade's TF Serving REST backend against a server that follows TF Serving's protocol."""

import base64
import contextlib
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from tf_alexnet_serving import Settings, create_app
from tf_alexnet_serving.routes import UNDECODABLE

from serving.tfserving_standin.server import TFServingREST
from tests.conftest import free_port
from tests.serving.standin_servers import grpc_server, rest_server
from tf_alexnet import contract
from tf_alexnet.export import export


@pytest.fixture(scope="module")
def servables(trained_run, test_images, tmp_path_factory):
    """Versions 1 and 2 of the exported model, label 'stable' = 1."""
    base = tmp_path_factory.mktemp("tfserving")
    export(trained_run, base, sample_images=test_images[:2])
    export(trained_run, base, sample_images=test_images[:2])
    return TFServingREST(base, "alexnet", {"stable": 1})


@pytest.fixture(scope="module")
def tfserving(servables):
    """The test TF Serving's REST API on a loopback port."""
    with rest_server(servables) as url:
        yield url


def test_test_server_follows_the_documented_protocol(tfserving, test_images):
    status = httpx.get(f"{tfserving}/v1/models/alexnet").json()
    assert status == {
        "model_version_status": [
            {
                "version": version,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version in ("2", "1")  # every version it serves (the `all` policy), newest first
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
    assert missing.json() == {"error": "Could not find any versions of model half"}
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
    # The local backend runs the float32 export in bf16 where the CPU has the units, and the
    # stand-in in this process does too once a local backend has turned the rewrite on: the
    # scores agree to bf16's precision (measured: 7e-4 and 9e-4 apart), not to float32's.
    assert got["score"] == pytest.approx(want["score"], abs=5e-3)


def test_version_and_label_selection(tfserving, test_images):
    files = {"file": ("a.png", test_images[0], "image/png")}
    with _client(tfserving, model_version=1) as client:
        assert client.get("/readyz").json()["version"] == 1
        assert client.post("/predict", files=files).json()["model"]["version"] == 1
    with _client(tfserving, model_label="stable") as client:  # label 'stable' = version 1
        # TF Serving's model status lists every version, whatever the label; the label's
        # version comes from its metadata.
        assert client.get("/readyz").json()["version"] == 1
        assert client.post("/predict", files=files).json()["model"]["version"] == 1
        assert client.get("/v1/metadata").json()["version"] == 1
    with _client(tfserving, model_label="nope") as client:
        _assert_unknown_label_is_unavailable(client, files)
    with _client(tfserving, model_version=7) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/predict", files=files)
        assert response.status_code == 503
        # TF Serving's own words, from its model status (asked first: no version known yet).
        assert "Could not find version 7 of model alexnet" in response.json()["detail"]


def _assert_unknown_label_is_unavailable(client, files):
    """A label TF Serving does not have is the facade's setting at fault, not the image."""
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "Unrecognized servable version label: nope" in ready.json()["detail"], ready.text
    response = client.post("/predict", files=files)
    assert response.status_code == 503, response.text
    assert "Unrecognized servable version label: nope" in response.json()["detail"]
    assert UNDECODABLE not in response.json()["detail"]


def test_upstream_failures_map_to_clear_answers(tfserving, test_images):
    files = {"file": ("a.png", test_images[0], "image/png")}
    with _client(f"http://127.0.0.1:{free_port()}") as unreachable:
        assert unreachable.get("/readyz").status_code == 503
        response = unreachable.post("/predict", files=files)
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        assert response.headers["retry-after"] == "1"
        # Not a 200 with version 0 and no class names.
        metadata = unreachable.get("/v1/metadata")
        assert metadata.status_code == 503 and "unreachable" in metadata.json()["detail"]
    with _client(tfserving, timeout_s=0.0001) as impatient:
        response = impatient.post("/predict", files=files)
        assert response.status_code == 504
        assert "did not answer within 0.0001 s" in response.json()["detail"]
    with _client(tfserving) as client:
        truncated = test_images[1][:60]
        response = client.post("/predict", files={"file": ("cut.png", truncated, "image/png")})
        assert response.status_code == 400
        assert response.json()["detail"] == f"cut.png: {UNDECODABLE}"


@pytest.fixture(scope="module")
def tfserving_grpc(servables):
    """The test TF Serving's gRPC API on a loopback port (its own event loop, in a thread)."""
    with grpc_server(servables) as address:
        yield address


def _grpc_client(address, **settings):
    return TestClient(create_app(Settings(tfserving_grpc_address=address, **settings)))


def test_grpc_backend_predicts_like_rest(tfserving, tfserving_grpc, test_images):
    files = {"file": ("shirt.png", test_images[0], "image/png")}
    with _grpc_client(tfserving_grpc) as client:
        assert client.get("/readyz").json() == {"status": "ready", "model": "alexnet", "version": 2}
        answer = client.post("/predict?top_k=3", files=files).json()
    with _client(tfserving) as rest:
        expected = rest.post("/predict?top_k=3", files=files).json()
    assert answer["model"] == {"name": "alexnet", "version": 2}
    assert [p["class_id"] for p in answer["predictions"][0]["top_k"]] == [
        p["class_id"] for p in expected["predictions"][0]["top_k"]
    ]
    # To bf16's precision, as in test_rest_backend_predicts_like_the_local_one: whether a
    # stand-in's call is rewritten depends on what ran before in this process (1.7e-3 apart).
    assert answer["predictions"][0]["score"] == pytest.approx(
        expected["predictions"][0]["score"], abs=5e-3
    )


def test_grpc_versions_labels_and_failures(tfserving_grpc, test_images):
    files = {"file": ("a.png", test_images[0], "image/png")}
    with _grpc_client(tfserving_grpc, model_label="stable") as client:
        assert client.get("/readyz").json()["version"] == 1
        assert client.post("/predict", files=files).json()["model"]["version"] == 1
    with _grpc_client(tfserving_grpc, model_label="nope") as client:
        _assert_unknown_label_is_unavailable(client, files)
    with _grpc_client(tfserving_grpc, model_version=7) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/predict", files=files)
        assert response.status_code == 503 and "NOT_FOUND" in response.json()["detail"]
    with _grpc_client(tfserving_grpc) as client:
        response = client.post(
            "/predict", files={"file": ("cut.png", test_images[1][:60], "image/png")}
        )
        assert response.status_code == 400
    with _grpc_client(f"127.0.0.1:{free_port()}", timeout_s=2) as unreachable:
        assert unreachable.get("/readyz").status_code == 503
        assert unreachable.post("/predict", files=files).status_code == 503


@pytest.fixture(scope="module")
def foreign_and_broken(tmp_path_factory):
    """Model `plain`: a Keras `model.export()` (no tf-alexnet signatures); model `broken`: a
    version folder that is no SavedModel."""
    from tf_alexnet.model import AlexNet

    base = tmp_path_factory.mktemp("foreign")
    AlexNet(input_shape=(28, 28, 1), classes=3, variant="mini").export(
        str(base / "plain" / "1"), verbose=False
    )
    (base / "broken" / "1").mkdir(parents=True)
    (base / "broken" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    return base


def test_the_rest_and_grpc_ports_swapped_are_named(tfserving, tfserving_grpc, test_images):
    """The REST URL on TF Serving's gRPC port said only "RemoteProtocolError: illegal request
    line"; the gRPC address on its REST port, gRPC's words about HTTP/2 frames."""
    files = {"file": ("a.png", test_images[0], "image/png")}
    swapped = (
        (_client(f"http://{tfserving_grpc}", model_poll_s=0), "TFSERVING_REST_URL"),
        (_grpc_client(tfserving.removeprefix("http://")), "TFSERVING_GRPC_ADDRESS"),
    )
    hints = {
        "TFSERVING_REST_URL": "It does not answer in HTTP/1.1: is TFSERVING_REST_URL TF "
        "Serving's REST port (8501), not its gRPC port (8500)?",
        "TFSERVING_GRPC_ADDRESS": "Is TFSERVING_GRPC_ADDRESS TF Serving's gRPC port (8500), not "
        "its REST port (8501)?",
    }
    for facade, setting in swapped:
        with facade as client:
            answers = [client.get("/readyz"), client.post("/predict", files=files)]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["detail"].endswith(hints[setting]), answer.text


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_a_model_tfserving_cannot_serve_is_named_in_the_answers(
    api, foreign_and_broken, test_images
):
    files = {"file": ("a.png", test_images[0], "image/png")}
    serve, client_for = (rest_server, _client) if api == "rest" else (grpc_server, _grpc_client)
    plain = TFServingREST(foreign_and_broken, "plain")
    with serve(plain) as address, client_for(address, model_name="plain") as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        assert detail == (
            "The model is not available: Version 1 served by TF Serving is not a tf-alexnet "
            "export: it takes `image` in its `serving_default` signature, not `image_bytes`. "
            "Serve what `tf-alexnet export` writes."
        )
        response = client.post("/predict", files=files)
        assert response.status_code == 503, response.text
        assert response.json()["detail"] in detail
    broken = TFServingREST(foreign_and_broken, "broken", max_num_load_retries=0)
    with serve(broken) as address, client_for(address, model_name="broken") as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "version 1 is END" in ready.json()["detail"], ready.text


def test_an_unreadable_model_status_is_not_ready(test_images):
    """A proxy in front of TF Serving answering 200 with another JSON: 503, not a 500."""
    import types

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(request):
        return JSONResponse({"model_version_status": [{"state": "AVAILABLE"}]})

    proxy = types.SimpleNamespace(app=Starlette(routes=[Route("/{path:path}", status)]))
    with rest_server(proxy) as url, _client(url) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "TF Serving's model status is unreadable" in ready.json()["detail"]


CLASS_COUNTS = (2, 20)


@pytest.fixture(scope="module")
def class_models(test_images, tmp_path_factory):
    """Untrained mini AlexNets with 2 and 20 classes named `kind 0`, `kind 1`, ..., exported
    as models `c2` and `c20`."""
    from tf_alexnet.model import AlexNet

    base = tmp_path_factory.mktemp("classes")
    for classes in CLASS_COUNTS:
        model = AlexNet(input_shape=(28, 28, 1), classes=classes, variant="mini")
        model.save(base / f"c{classes}.keras")
        names = [f"kind {i}" for i in range(classes)]
        export(
            base / f"c{classes}.keras",
            base / "models",
            name=f"c{classes}",
            sample_images=test_images[:1],
            class_names=names,
        )
    return base / "models"


@pytest.fixture(scope="module", params=["tfserving-rest", "tfserving-grpc", "local"])
def facade_for(request, class_models):
    """facade_for(classes, **settings): a TestClient over the `c<classes>` model."""
    with contextlib.ExitStack() as stack:
        servers = {}

        def client(classes, **settings):
            name = f"c{classes}"
            if request.param != "local" and name not in servers:
                servables = TFServingREST(class_models, name)
                serve = rest_server if request.param == "tfserving-rest" else grpc_server
                servers[name] = stack.enter_context(serve(servables))
            address = {
                "tfserving-rest": "tfserving_rest_url",
                "tfserving-grpc": "tfserving_grpc_address",
                "local": "model_base_path",
            }[request.param]
            where = str(class_models) if request.param == "local" else servers[name]
            return TestClient(
                create_app(
                    Settings(backend=request.param, model_name=name, **{address: where}, **settings)
                )
            )

        yield client


@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_names_come_from_the_served_model(facade_for, classes, test_images):
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(test_images[:4])]
    with facade_for(classes, max_top_k=20) as client:
        assert client.get("/readyz").status_code == 200
        answer = client.post(f"/predict?top_k={classes}", files=files)
        assert answer.status_code == 200, answer.text
        assert len(client.get("/v1/metadata").json()["class_names"]) == classes
    for prediction in answer.json()["predictions"]:
        assert prediction["class_name"] == f"kind {prediction['class_id']}"
        assert len(prediction["top_k"]) == classes
        for entry in prediction["top_k"]:  # a name not reported by TF Serving yet is null
            assert entry["class_name"] in (f"kind {entry['class_id']}", None)


@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_configured_names_that_disagree_are_refused(facade_for, classes, test_images, caplog):
    files = {"file": ("a.png", test_images[0], "image/png")}
    right = [f"kind {i}" for i in range(classes)]
    with facade_for(classes, class_names=right, max_top_k=20) as client:
        assert client.get("/readyz").status_code == 200
        answer = client.post(f"/predict?top_k={classes}", files=files).json()["predictions"][0]
        assert [e["class_name"] for e in answer["top_k"]] == [
            f"kind {e['class_id']}" for e in answer["top_k"]
        ]
    for wrong, message in [
        (
            list(contract.CLASS_NAMES),
            f"CLASS_NAMES has 10 names but the served model has {classes}",
        ),
        (right[::-1], "CLASS_NAMES disagrees with the served model: class "),
    ]:
        with facade_for(classes, class_names=wrong) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and message in ready.json()["detail"], ready.text
            assert caplog.text.count(f"Not ready: {message}") == 1  # logged as found, once
            caplog.clear()
            response = client.post("/predict", files=files)
            assert response.status_code == 503 and message in response.json()["detail"]
            assert "\ntf_alexnet_model_ready 0.0\n" in client.get("/metrics").text


def _copy_version(source_base, model, version, target_base, target_version=None):
    import shutil

    shutil.copytree(
        source_base / model / str(version),
        target_base / "alexnet" / str(target_version or version),
    )


def test_rest_answers_name_the_version_that_computed_them(servables, test_images, tmp_path):
    """REST answers name no version: the facade asks a version by number, and learns a new
    one by polling (it said version 1 for ever, until something called /readyz)."""
    files = {"file": ("a.png", test_images[0], "image/png")}
    _copy_version(servables.base_path, "alexnet", 1, tmp_path)
    latest = TFServingREST(tmp_path, "alexnet", num_versions=1)  # TF Serving's default policy
    with rest_server(latest) as url, _client(url, model_poll_s=0) as client:
        assert client.get("/readyz").json()["version"] == 1
        _copy_version(servables.base_path, "alexnet", 1, tmp_path, 2)
        latest.poll()  # 2 loads, 1 is unloaded
        assert client.post("/predict", files=files).json()["model"]["version"] == 2
        assert client.get("/v1/metadata").json()["version"] == 2
    every = TFServingREST(tmp_path, "alexnet")  # the `all` policy: 1 and 2 stay AVAILABLE
    with rest_server(every) as url, _client(url, model_poll_s=0.1) as client:
        assert client.post("/predict", files=files).json()["model"]["version"] == 2
        _copy_version(servables.base_path, "alexnet", 1, tmp_path, 3)
        every.poll()
        start = time.monotonic()  # the facade's own polls find 3; no /readyz in between
        while (version := _metric(client, "tf_alexnet_model_version")) != "3.0":
            assert time.monotonic() - start < 30, version
            time.sleep(0.1)
        assert client.post("/predict", files=files).json()["model"]["version"] == 3


def _metric(client, name):
    """The value of the unlabelled metric `name` on the facade's /metrics."""
    lines = client.get("/metrics").text.splitlines()
    return next(line for line in lines if line.startswith(f"{name} ")).split()[-1]


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_a_new_version_that_is_not_an_export_is_not_the_image_fault(
    api, servables, foreign_and_broken, test_images, tmp_path
):
    """TF Serving refuses every image of such a version as invalid: the answer said the
    client's image could not be decoded, until something called /readyz."""
    import shutil

    files = {"file": ("a.png", test_images[0], "image/png")}
    serve, client_for = (rest_server, _client) if api == "rest" else (grpc_server, _grpc_client)
    _copy_version(servables.base_path, "alexnet", 1, tmp_path)
    latest = TFServingREST(tmp_path, "alexnet", num_versions=1)
    with serve(latest) as address, client_for(address, model_poll_s=0) as client:
        assert client.post("/predict", files=files).status_code == 200
        shutil.copytree(foreign_and_broken / "plain" / "1", tmp_path / "alexnet" / "2")
        latest.poll()
        response = client.post("/predict", files=files)
        assert response.status_code == 503, response.text
        assert "Version 2 served by TF Serving is not a tf-alexnet export" in response.text
        assert UNDECODABLE not in response.text
        truncated = {"file": ("cut.png", test_images[1][:60], "image/png")}
        assert client.post("/predict", files=truncated).status_code == 503  # nor this one


def test_a_server_that_is_not_tf_serving_is_named(test_images):
    """An HTML page where TF Serving's JSON was expected: a 503 that says so (a 200 page was a
    400 blaming the image, then "TF Serving's model status is unreadable: <!DOCTYPE HTML>...";
    a 404 page "TF Serving has no such model: <!DOCTYPE HTML>...")."""
    import types

    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    files = {"file": ("a.png", test_images[0], "image/png")}
    page = "<!DOCTYPE HTML><html><body>Directory listing</body></html>"

    async def not_found(request):
        return HTMLResponse(page, status_code=404)

    web_server = types.SimpleNamespace(app=Starlette(routes=[Route("/{path:path}", not_found)]))
    with rest_server(web_server) as url, _client(url) as client:
        for path in ("/readyz", "/v1/metadata"):
            response = client.get(path)
            assert response.status_code == 503
            assert (
                "The server at TFSERVING_REST_URL is not TF Serving: HTTP 404, text/html"
                in (response.json()["detail"])
            )
        assert client.post("/predict", files=files).status_code == 503

    async def welcome(request):
        return HTMLResponse(page)

    web_server = types.SimpleNamespace(
        app=Starlette(routes=[Route("/{path:path}", welcome, methods=["GET", "POST"])])
    )
    with rest_server(web_server) as url, _client(url) as client:  # a 200 page, not a 404
        for response in (client.get("/readyz"), client.post("/predict", files=files)):
            assert response.status_code == 503, response.text
            assert (
                "The server at TFSERVING_REST_URL is not TF Serving: HTTP 200, text/html"
                in (response.json()["detail"])
            ), response.text

    async def status(request):  # a proxy that answers the status, then a page for predictions
        return JSONResponse(
            {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {}}]}
        )

    proxy = types.SimpleNamespace(
        app=Starlette(
            routes=[
                Route("/v1/models/alexnet", status),
                Route("/{path:path}", welcome, methods=["GET", "POST"]),
            ]
        )
    )
    with rest_server(proxy) as url, _client(url) as client:
        for response in (client.get("/readyz"), client.post("/predict", files=files)):
            assert response.status_code == 503, response.text
            assert (
                "TF Serving's answer holds no predictions: HTTP 200, text/html"
                in (response.json()["detail"])
            )


def test_the_facade_listens_while_tf_serving_does_not_answer(test_images):
    """Start-up waited for TF Serving's status (TIMEOUT_S, twice when its metadata stalled
    too): /healthz did not answer meanwhile, and a liveness probe could kill the facade."""
    import socket

    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with _client(url, timeout_s=8) as client:
            assert client.get("/healthz").status_code == 200
            # well within the 8 s the start-up waited (2.2 s once, on 2 cores at a load of 11)
            assert time.monotonic() - start < 4
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["detail"] == (
                "The model is not available: TF Serving did not answer within 8 s."
            )


def test_grpc_reconnects_within_a_second_of_tf_serving_coming_back(servables, test_images):
    """gRPC's reconnect backoff grows to 120 s, and calls fail at once meanwhile: after an
    outage, the facade stayed unready for up to 2 minutes after TF Serving was back."""
    port = free_port()
    with _grpc_client(f"127.0.0.1:{port}") as client:
        with grpc_server(servables, port):
            _wait_until_ready(client, within_s=5)
        start = time.monotonic()
        while time.monotonic() - start < 16:  # the backoff would have reached 6-10 s
            assert client.get("/readyz").status_code == 503
            time.sleep(1)
        with grpc_server(servables, port):
            _wait_until_ready(client, within_s=3)


def _wait_until_ready(client, within_s):
    start = time.monotonic()
    while (ready := client.get("/readyz")).status_code != 200:
        assert time.monotonic() - start < within_s, ready.text
        time.sleep(0.1)


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_the_model_log_says_which_version_tf_serving_serves(
    api, servables, test_images, events, tmp_path
):
    """Only the local backend logged its versions: behind TF Serving, the log said nothing of
    the version learnt at start, of a new one, or of why the model was unavailable."""
    files = {"file": ("a.png", test_images[0], "image/png")}
    serve, client_for = (rest_server, _client) if api == "rest" else (grpc_server, _grpc_client)
    _copy_version(servables.base_path, "alexnet", 1, tmp_path)
    latest = TFServingREST(tmp_path, "alexnet", num_versions=1)
    port = free_port()
    address = f"http://127.0.0.1:{port}" if api == "rest" else f"127.0.0.1:{port}"
    with client_for(address, model_poll_s=0) as client:
        with serve(latest, port):
            _wait_until_ready(client, within_s=10)
            assert client.post("/predict", files=files).status_code == 200
            _copy_version(servables.base_path, "alexnet", 1, tmp_path, 2)
            latest.poll()  # 2 loads, 1 is unloaded
            assert client.post("/predict", files=files).json()["model"]["version"] == 2
        outage = len(events.lines)
        for _ in range(3):  # one line for the outage, not one per check
            assert client.get("/readyz").status_code == 503
        during = events.lines[outage:]
        with serve(latest, port):
            _wait_until_ready(client, within_s=10)
    backend = f"tfserving-{api}"
    served = [e for e in events.lines if e["event"] == "model_serving"]
    assert [(e["version"], e["previous_version"], e["backend"]) for e in served] == [
        (1, None, backend),
        (2, 1, backend),
        (2, 2, backend),  # back after the outage
    ], events.lines
    assert served[0]["classes"] == 10 and served[0]["model"] == "alexnet"
    assert [(e["event"], e["version"], e["backend"]) for e in during] == [
        ("model_unavailable", 2, backend)
    ], during
    assert ("unreachable" if api == "rest" else "UNAVAILABLE") in during[0]["error"]
    assert all(isinstance(e["time"], str) for e in events.lines)


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_requests_do_not_wait_on_a_tf_serving_found_unavailable(
    api, servables, test_images, events
):
    """While TF Serving was down, every request waited for its own failure (with Compose, 10 s
    for the stopped container's name not to resolve; here, TIMEOUT_S on a silent port) though
    the status watcher already knew: they answer 503 at once now, and 200 again once the
    watcher finds TF Serving back. The gRPC backend had no watcher: each request waited
    TIMEOUT_S for its DEADLINE_EXCEEDED, and the model log said nothing of the outage or of
    the return unless something called /readyz. No metric said the model was gone either:
    `tf_alexnet_model_ready` does, from the watcher's last check."""
    import socket

    def ready_metric() -> str:
        lines = client.get("/metrics").text.splitlines()
        return next(line for line in lines if line.startswith("tf_alexnet_model_ready "))

    files = {"file": ("a.png", test_images[0], "image/png")}
    serve, client_for = (rest_server, _client) if api == "rest" else (grpc_server, _grpc_client)
    port = free_port()
    address = f"http://127.0.0.1:{port}" if api == "rest" else f"127.0.0.1:{port}"
    with client_for(address, timeout_s=2, model_poll_s=0.2) as client:
        with serve(servables, port):
            _wait_until_ready(client, within_s=10)
            assert client.post("/predict", files=files).status_code == 200
            assert ready_metric() == "tf_alexnet_model_ready 1.0"
            gone = len(events.lines)  # (a check at start-up may have timed out too)
        with socket.socket() as silent:  # takes connections, never answers
            silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            silent.bind(("127.0.0.1", port))
            silent.listen(64)
            # The watcher's check times out (gRPC's first, after its reconnect backoff of up
            # to 1 s during which calls fail at once as UNAVAILABLE), and the log says so.
            timed_out = "did not answer within 2 s" if api == "rest" else "DEADLINE_EXCEEDED"
            start = time.monotonic()
            while not any(
                e["event"] == "model_unavailable" and timed_out in e["error"]
                for e in events.lines[gone:]
            ):
                assert time.monotonic() - start < 30, events.lines
                time.sleep(0.1)
            start = time.monotonic()
            answer = client.post("/predict", files=files)
            assert time.monotonic() - start < 0.5
            assert answer.status_code == 504, answer.text
            if api == "rest":
                assert answer.json()["detail"] == "TF Serving did not answer within 2 s."
            else:
                assert "DEADLINE_EXCEEDED" in answer.json()["detail"]
            assert ready_metric() == "tf_alexnet_model_ready 0.0"
        outage = len(events.lines)
        with serve(servables, port):
            start = time.monotonic()
            while (answer := client.post("/predict", files=files)).status_code != 200:
                assert answer.status_code in (503, 504), answer.text
                assert time.monotonic() - start < 5, answer.text
                time.sleep(0.1)
            # Read while TF Serving is still up: once `serve` stops it, the watcher (every
            # 0.2 s) may log its absence before the client closes.
            back = [e["event"] for e in events.lines[outage:]]
            assert ready_metric() == "tf_alexnet_model_ready 1.0"
    assert back and back[-1] == "model_serving", events.lines  # no /readyz asked meanwhile


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_readiness_probes_during_a_silent_outage_share_one_check(api):
    """Readiness checks ran one at a time, each waiting for the ones before it: with TF
    Serving silent (SIGSTOP, a hung host), four concurrent /readyz answered after 1, 2, 3 and 4
    times TIMEOUT_S (and, with probes every few seconds, later and later)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    client_for = _client if api == "rest" else _grpc_client
    with socket.socket() as silent:  # takes connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        address = f"http://127.0.0.1:{port}" if api == "rest" else f"127.0.0.1:{port}"
        with client_for(address, timeout_s=1.5) as client:

            def probe(_):
                start = time.monotonic()
                response = client.get("/readyz")
                return response.status_code, round(time.monotonic() - start, 2)

            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(probe, range(4)))
    assert [status for status, _ in answers] == [503] * 4
    assert max(seconds for _, seconds in answers) < 3, answers  # one TIMEOUT_S, not four


def test_an_answer_that_trickles_in_is_cut_at_timeout_s(test_images):
    """httpx's timeout bounds each read, not the call: TF Serving (or a proxy before it)
    sending its answer a byte at a time held /readyz and /predict for as long as it lasted
    (here 15 s; hours for a large Content-Length) with TIMEOUT_S at 1 s."""
    import socket
    import threading

    status = (
        b'{"model_version_status": [{"version": "1", "state": "AVAILABLE", '
        b'"status": {"error_code": "OK", "error_message": ""}}]}'
    )

    def answer(connection):
        with connection:
            request = connection.recv(65536)
            if request.startswith(b"GET /v1/models/alexnet HTTP/"):
                head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                connection.sendall(head + b"content-length: %d\r\n\r\n" % len(status) + status)
                return
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 60\r\n\r\n")
            with contextlib.suppress(OSError):
                for _ in range(60):  # a byte every 0.25 s: each read well within TIMEOUT_S
                    connection.sendall(b" ")
                    time.sleep(0.25)

    def accept(server):
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                threading.Thread(target=answer, args=(connection,), daemon=True).start()

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        threading.Thread(target=accept, args=(server,), daemon=True).start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with _client(url, timeout_s=1, model_poll_s=0) as client:
            start = time.monotonic()
            ready = client.get("/readyz")
            assert time.monotonic() - start < 4  # the metadata's 1 s, then the probe's
            assert ready.status_code == 503
            assert ready.json()["detail"] == (
                "The model is not available: TF Serving did not answer within 1 s."
            )
            start = time.monotonic()
            answer = client.post("/predict", files={"file": ("a.png", test_images[0])})
            assert time.monotonic() - start < 4
            assert answer.status_code == 504, answer.text
            assert answer.json()["detail"] == "TF Serving did not answer within 1 s."


@pytest.mark.parametrize(
    "metadata, probabilities, expected",
    [
        ({"metadata": {"signature_def": {"signature_def": ["serving_default"]}}}, [0.5, 0.5], 200),
        ({"metadata": {"signature_def": {"signature_def": {"serving_default": "?"}}}}, [1.0], 200),
        ({}, ["0.5", "0.5"], 503),
    ],
)
def test_a_proxy_answering_other_json_is_not_a_500(metadata, probabilities, expected, test_images):
    """A proxy in front of TF Serving that answers JSON in other shapes: its metadata's
    signatures as a list or a string, or scores as strings, were a 500 (AttributeError,
    ValueError) on /readyz and /predict, and the status watcher died of it. Metadata it cannot
    read is done without (the classes come from the answers, as when there is none); scores
    that are not numbers are not TF Serving's answer."""
    import types

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def status(request):
        return JSONResponse(
            {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {}}]}
        )

    async def model_metadata(request):
        return JSONResponse(metadata)

    async def predict(request):
        count = len((await request.json())["instances"])
        return JSONResponse({"predictions": [{"probabilities": probabilities}] * count})

    proxy = types.SimpleNamespace(
        app=Starlette(
            routes=[
                Route("/v1/models/alexnet", status),
                Route("/v1/models/alexnet/versions/1/metadata", model_metadata),
                Route("/v1/models/alexnet/versions/1:predict", predict, methods=["POST"]),
            ]
        )
    )
    files = {"file": ("a.png", test_images[0], "image/png")}
    with rest_server(proxy) as url, _client(url) as client:
        for response in (client.get("/readyz"), client.post("/predict", files=files)):
            assert response.status_code == expected, response.text
            if expected == 503:
                assert "TF Serving's answer holds no predictions: HTTP 200" in response.text


def test_a_port_that_closes_every_connection_is_named_in_one_sentence(test_images):
    """A port that accepts and closes (a crashed proxy, TF Serving starting up): the detail
    ended "Server disconnected without sending a response.." (httpx's full stop, then ours)."""
    import socket
    import threading

    def close_all(server):
        with contextlib.suppress(OSError):
            while True:
                server.accept()[0].close()

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        threading.Thread(target=close_all, args=(server,), daemon=True).start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with _client(url, model_poll_s=0) as client:
            ready = client.get("/readyz")
            answers = [ready, client.post("/predict", files={"file": test_images[0]})]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        detail = answer.json()["detail"]
        assert "TF Serving is unreachable: " in detail and detail.endswith("."), detail
        assert not detail.endswith(".."), detail


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_tf_serving_back_with_another_model_is_learnt_anew(
    api, servables, class_models, events, tmp_path
):
    """TF Serving restarted with another model under the same version number (a rebuilt
    image, another volume): the facade kept the first model's class names, so /v1/metadata
    listed 10 names for a 2-class model and the model log said `classes: 10`."""
    import shutil

    serve, client_for = (rest_server, _client) if api == "rest" else (grpc_server, _grpc_client)
    _copy_version(servables.base_path, "alexnet", 1, tmp_path / "first")
    shutil.copytree(class_models / "c2" / "1", tmp_path / "second" / "alexnet" / "1")
    port = free_port()
    address = f"http://127.0.0.1:{port}" if api == "rest" else f"127.0.0.1:{port}"
    with client_for(address, model_poll_s=0.2) as client:
        with serve(TFServingREST(tmp_path / "first", "alexnet"), port):
            _wait_until_ready(client, within_s=10)
            assert len(client.get("/v1/metadata").json()["class_names"]) == 10
        start = time.monotonic()
        while client.get("/readyz").status_code == 200:  # the watcher sees it gone
            assert time.monotonic() - start < 5
            time.sleep(0.1)
        with serve(TFServingREST(tmp_path / "second", "alexnet"), port):
            _wait_until_ready(client, within_s=10)
            metadata = client.get("/v1/metadata").json()
    assert metadata["version"] == 1
    names = metadata["class_names"]
    assert len(names) == 2 and set(names) - {None} <= {"kind 0", "kind 1"}, metadata
    served = [e for e in events.lines if e["event"] == "model_serving"]
    assert [(e["version"], e["classes"]) for e in served] == [(1, 10), (1, 2)], served


def test_an_image_over_grpc_max_message_bytes_is_too_large_not_overload(servables, test_images):
    """gRPC refuses to send a message over GRPC_MAX_MESSAGE_BYTES with RESOURCE_EXHAUSTED,
    which the facade took for TF Serving overloaded: 503 with Retry-After: 1, and the same
    image refused again on every retry. (Settings refuse such a limit at start, see below;
    it is forced here, past their check.)"""
    import io
    import random

    from PIL import Image

    noise = Image.frombytes("L", (96, 96), random.Random(0).randbytes(96 * 96))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    large = buffer.getvalue()
    assert len(large) > 8192
    with grpc_server(servables) as address:
        settings = Settings(tfserving_grpc_address=address)
        settings.grpc_max_message_bytes = 8192
        with TestClient(create_app(settings)) as client:
            assert client.get("/readyz").status_code == 200
            small = client.post("/predict", files={"file": ("a.png", test_images[0])})
            assert small.status_code == 200, small.text
            response = client.post("/predict", files={"file": ("large.png", large)})
    assert response.status_code == 413, response.text
    assert "retry-after" not in response.headers
    detail = response.json()["detail"]
    assert detail.startswith("The image is too large to send to TF Serving: a "), detail
    assert detail.endswith("-byte gRPC message, over GRPC_MAX_MESSAGE_BYTES (8,192 bytes)."), detail


def test_grpc_max_message_bytes_fits_the_largest_body_the_facade_accepts(servables, test_images):
    """GRPC_MAX_MESSAGE_BYTES was not compared with MAX_BODY_BYTES: with both at 8192, the
    facade read a whole 8,192-byte image, then answered 413 "too large to send to TF
    Serving". Set too low, it is refused at start; left at its default, it grows to fit."""
    import pydantic
    from tf_alexnet_serving.settings import grpc_message_bytes_needed

    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(
            tfserving_grpc_address="tfserving:8500",
            max_body_bytes=8192,
            grpc_max_message_bytes=8192,
        )
    message = refused.value.errors()[0]["msg"].removeprefix("Value error, ")
    assert message == (
        "grpc_max_message_bytes (TF_ALEXNET_SERVE_GRPC_MAX_MESSAGE_BYTES) should be at least "
        "9,223 for a body of max_body_bytes (TF_ALEXNET_SERVE_MAX_BODY_BYTES=8192) to reach TF "
        "Serving as one image: raise it, or lower MAX_BODY_BYTES. Received: "
        "grpc_max_message_bytes=8192"
    )
    large_bodies = Settings(tfserving_grpc_address="tfserving:8500", max_body_bytes=2**27)
    assert large_bodies.grpc_max_message_bytes == grpc_message_bytes_needed(large_bodies) > 2**27
    assert Settings(max_body_bytes=2**27, grpc_max_message_bytes=8192).max_body_bytes == 2**27

    body = test_images[0] + b"\0" * (8192 - len(test_images[0]))  # the largest body accepted
    with grpc_server(servables) as address:
        needed = grpc_message_bytes_needed(Settings(max_body_bytes=8192))
        settings = Settings(
            tfserving_grpc_address=address, max_body_bytes=8192, grpc_max_message_bytes=needed
        )
        with TestClient(create_app(settings)) as client:
            response = client.post("/predict", content=body, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_tf_serving_answers_are_timed_in_the_metrics(api, tfserving, tfserving_grpc, test_images):
    """tf_alexnet_backend_seconds ("Model call latency") timed the local backend's calls
    only: behind TF Serving it stayed at 0 however many images TF Serving answered."""
    files = {"file": ("a.png", test_images[0], "image/png")}
    with _client(tfserving) if api == "rest" else _grpc_client(tfserving_grpc) as client:
        for _ in range(3):
            assert client.post("/predict", files=files).status_code == 200
        metrics = client.get("/metrics").text
    assert "tf_alexnet_backend_seconds_count 3.0" in metrics, metrics


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_a_good_image_batched_with_an_undecodable_one_is_answered(
    api, servables, test_images, tmp_path
):
    """With batching on (the compose stack's), TF Serving runs concurrent requests as one
    batch and answers each with the batch's failure: a good image that shared a batch with an
    undecodable one was answered "could not be decoded" (400)."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.tfserving_standin.server import Batching

    _copy_version(servables.base_path, "alexnet", 1, tmp_path)
    # A batch runs when 2 images have come, or 3 s after its first.
    batching = Batching(max_batch_size=2, batch_timeout_micros=3_000_000)
    batched = TFServingREST(tmp_path, "alexnet", batching=batching)
    serve, client_for = (rest_server, _client) if api == "rest" else (grpc_server, _grpc_client)
    good = {"file": ("good.png", test_images[0], "image/png")}
    cut = {"file": ("cut.png", test_images[1][:60], "image/png")}  # a valid header, no data
    with serve(batched) as address, client_for(address, model_poll_s=0) as client:
        assert client.get("/readyz").status_code == 200
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda files: client.post("/predict", files=files), [good, cut])
            )
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["model"]["version"] == 1
    assert answers[1].status_code == 400 and UNDECODABLE in answers[1].text, answers[1].text


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_a_colour_palette_bmp_is_named_through_tf_serving(api, tfserving, tfserving_grpc):
    """TF Serving refuses an 8-bit colour-palette BMP (the export's decoder does), and the
    facade answered "could not be decoded"; a gray one (its palette the gray ramp) is read."""
    from tests.serving.test_serving_images import COLOUR_BMP, GRAY_BMP

    client = _client(tfserving) if api == "rest" else _grpc_client(tfserving_grpc)
    with client:
        refused = client.post("/predict", files={"file": ("pal.bmp", COLOUR_BMP, "image/bmp")})
        accepted = client.post("/predict", content=GRAY_BMP, headers={"Content-Type": "image/bmp"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"] == f"pal.bmp: {contract.PALETTE_BMP}"
    assert accepted.status_code == 200, accepted.text
