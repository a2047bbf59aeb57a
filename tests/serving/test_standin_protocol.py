"""The TF Serving stand-in (serving/tfserving_standin/) answers as TF Serving's source does.

Each test names the TF Serving file the behaviour was read from (github.com/tensorflow/serving,
tensorflow_serving/...). Tiny real SavedModels; REST through Starlette's TestClient, gRPC through
a `grpc.aio` server on a loopback port.
"""

from __future__ import annotations

import base64
import contextlib
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.tfserving_standin.server import NOT_FOUND_PAGE, Batching, TFServingREST
from tests.docker.test_tfserving_standin import save_version
from tests.serving.standin_servers import grpc_server


def save_bytes_model(folder: pathlib.Path) -> None:
    """A SavedModel whose one input is named `image_bytes` (a string) and whose outputs are
    its length and the input back (`echo_bytes`)."""
    module = tf.Module()
    module.serve = tf.function(
        lambda image_bytes: {
            "length": tf.strings.length(image_bytes),
            "echo_bytes": image_bytes,
        },
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def servables(tmp_path_factory: pytest.TempPathFactory) -> TFServingREST:
    """Model `m`: version 1 (y = x), 2 (y = 2x), 3 cannot load; label `stable` = 1."""
    base = tmp_path_factory.mktemp("standin")
    (base / "m").mkdir()
    save_version(base / "m" / "1", 1.0)
    save_version(base / "m" / "2", 2.0)
    (base / "m" / "3").mkdir()
    return TFServingREST(base, "m", {"stable": 1}, max_num_load_retries=0)


@pytest.fixture(scope="module")
def client(servables: TFServingREST) -> TestClient:
    return TestClient(servables.app)


@contextlib.contextmanager
def grpc_channel(servables: TFServingREST) -> Iterator[grpc.Channel]:
    """A channel to the stand-in's gRPC server, with the client's own 4 MiB receive limit
    raised, as the facade's gRPC backend does."""
    options = [("grpc.max_receive_message_length", 2**31 - 1)]
    with (
        grpc_server(servables) as address,
        grpc.insecure_channel(address, options=options) as channel,
    ):
        yield channel


@pytest.fixture(scope="module")
def channel(servables: TFServingREST) -> Iterator[grpc.Channel]:
    with grpc_channel(servables) as channel:
        yield channel


def versions(answer: dict) -> list[tuple[str, str]]:
    return [(s["version"], s["state"]) for s in answer["model_version_status"]]


ALL_VERSIONS = [("3", "END"), ("2", "AVAILABLE"), ("1", "AVAILABLE")]


def test_model_status_ignores_version_labels(client: TestClient, channel: grpc.Channel) -> None:
    """get_model_status_impl.cc narrows only on `model_spec.has_version()`."""
    for label in ("stable", "nope"):
        answer = client.get(f"/v1/models/m/labels/{label}")
        assert answer.status_code == 200, answer.text
        assert versions(answer.json()) == ALL_VERSIONS
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m", "version_label": "x"})
    )
    assert [s.version for s in status.model_version_status] == [3, 2, 1]


def test_unknown_label_is_invalid_argument(client: TestClient, channel: grpc.Channel) -> None:
    """server_core.cc GetModelVersionForLabel(): InvalidArgument, so REST 400."""
    message = "Unrecognized servable version label: nope"
    predict = client.post("/v1/models/m/labels/nope:predict", json={"instances": [1.0]})
    metadata = client.get("/v1/models/m/labels/nope/metadata")
    for answer in (predict, metadata):
        assert (answer.status_code, answer.json()) == (400, {"error": message})
    assert client.post("/v1/models/m/labels/stable:predict", json={"instances": [1.0]}).json() == {
        "predictions": [1.0]
    }
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest(model_spec={"name": "m", "version_label": "nope"})
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    for call, argument in (
        (stub.Predict, request),
        (
            stub.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec={"name": "m", "version_label": "nope"}, metadata_field=["signature_def"]
            ),
        ),
    ):
        with pytest.raises(grpc.RpcError) as failure:
            call(argument)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.value.details() == message


def test_grpc_model_status_lists_every_version(channel: grpc.Channel) -> None:
    """get_model_status_impl.cc: all versions with state and load status, or the one asked."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    states = get_model_status_pb2.ModelVersionStatus.State
    answer = stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"})
    )
    assert [(s.version, states.Name(s.state)) for s in answer.model_version_status] == [
        (int(v), state) for v, state in ALL_VERSIONS
    ]
    failed = answer.model_version_status[0].status
    assert failed.error_code == 5 and failed.error_message  # NOT_FOUND: no saved_model.pb
    one = stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "m", "version": {"value": 1}}
        )
    )
    assert [s.version for s in one.model_version_status] == [1]
    for spec, message in (
        ({"name": "m", "version": {"value": 7}}, "Could not find version 7 of model m"),
        ({"name": "half"}, "Could not find any versions of model half"),
    ):
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert failure.value.details() == message


def test_grpc_takes_messages_over_4_mib(servables: TFServingREST) -> None:
    """server.cc SetMaxMessageSize(kint32max): a 6 MB request and answer go through."""
    with grpc_channel(servables) as channel:
        request = predict_pb2.PredictRequest(model_spec={"name": "m"})
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(1_500_000, np.float32)))
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    assert tf.make_ndarray(answer.outputs["y"]).shape == (1_500_000,)


def test_version_folders_with_leading_zeros_load(tmp_path: pathlib.Path) -> None:
    """file_system_storage_path_source.cc: the version path is the child's own name."""
    (tmp_path / "m").mkdir()
    save_version(tmp_path / "m" / "0004", 4.0)
    client = TestClient(TFServingREST(tmp_path, "m", max_num_load_retries=0).app)
    assert versions(client.get("/v1/models/m").json()) == [("4", "AVAILABLE")]
    answer = client.post("/v1/models/m/versions/4:predict", json={"instances": [1.0]})
    assert answer.json() == {"predictions": [4.0]}


def test_rest_routing_and_error_texts(client: TestClient) -> None:
    """http_server.cc, http_rest_api_handler.cc, http_rest_api_util.cc, get_model_status_impl.cc."""

    def error(answer) -> tuple[int, str]:
        return answer.status_code, answer.json()["error"]

    assert error(client.get("/v1/models")) == (400, "Missing model name in request.")
    assert error(client.get("/v1/models/m/versions/x")) == (
        400,
        "Malformed request: GET /v1/models/m/versions/x",
    )
    assert error(client.put("/v1/models/m")) == (400, "Malformed request: PUT /v1/models/m")
    assert error(client.get("/v1/models/half")) == (
        404,
        "Could not find any versions of model half",
    )
    assert error(client.get("/v1/models/m/versions/7")) == (
        404,
        "Could not find version 7 of model m",
    )
    outside = client.get("/healthz")
    assert (outside.status_code, outside.text) == (404, NOT_FOUND_PAGE)
    assert outside.headers["content-type"].startswith("text/html")
    assert client.get("/V1/MODELS/m").status_code == 200  # the path regexes are (?i)
    assert client.post("/V1/Models/m:predict", json={"instances": [1.0]}).status_code == 200
    assert error(
        client.post("/v1/models/m:predict", json={"signature_name": "x", "inputs": [1]})
    ) == (
        400,
        'Serving signature name: "x" not found in signature def',
    )
    assert error(client.post("/v1/models/half:predict", json={"instances": [1.0]})) == (
        404,
        "Servable not found for request: Latest(half)",
    )


def test_predict_runs_the_signature_its_body_names(tmp_path: pathlib.Path) -> None:
    """json_tensor.cc and http_rest_api_handler.cc: `signature_name` picks the signature whose
    inputs type the body and which runs ("" or no key: serving_default); one the model does
    not have is INVALID_ARGUMENT, a value that is not a string too. gRPC: the ModelSpec's
    signature_name, FAILED_PRECONDITION when missing (predict_util.cc)."""
    module = tf.Module()
    module.one = tf.function(
        lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32, name="x")]
    )
    module.ten = tf.function(
        lambda z: {"w": 10 * z}, input_signature=[tf.TensorSpec([None], tf.float32, name="z")]
    )
    (tmp_path / "s").mkdir()
    signatures = {"serving_default": module.one, "tenfold": module.ten}
    tf.saved_model.save(module, str(tmp_path / "s" / "1"), signatures=signatures)
    servables = TFServingREST(tmp_path, "s", max_num_load_retries=0)
    client = TestClient(servables.app)
    url = "/v1/models/s:predict"
    for body, answer in (
        ({"instances": [2.0]}, {"predictions": [2.0]}),
        ({"signature_name": "", "instances": [2.0]}, {"predictions": [2.0]}),
        ({"signature_name": "tenfold", "instances": [2.0]}, {"predictions": [20.0]}),
        ({"signature_name": "tenfold", "inputs": {"z": [2.0]}}, {"outputs": [20.0]}),
    ):
        response = client.post(url, json=body)
        assert (response.status_code, response.json()) == (200, answer), body
    for body, message in (
        (
            {"signature_name": "nope", "instances": [2.0]},
            'Serving signature name: "nope" not found in signature def',
        ),
        (  # the named signature's inputs, not serving_default's
            {"signature_name": "tenfold", "instances": [{"x": 2.0}]},
            "Failed to process element: 0 key: x of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: x",
        ),
    ):
        response = client.post(url, json=body)
        assert (response.status_code, response.json()) == (400, {"error": message}), body
    refused = client.post(url, json={"signature_name": 7, "instances": [2.0]})
    assert refused.status_code == 400
    assert refused.json()["error"].endswith("'signature_name' key must be a string value.")
    with grpc_channel(servables) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "s", "tenfold"
        request.inputs["z"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
        assert tf.make_ndarray(stub.Predict(request).outputs["w"]).tolist() == [20.0]
        request.model_spec.signature_name = "nope"
        with pytest.raises(grpc.RpcError) as failed:
            stub.Predict(request)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.details() == 'Serving signature key "nope" not found.'


def test_inputs_of_a_shape_the_signature_does_not_take_are_invalid(tmp_path: pathlib.Path) -> None:
    """A body nested deeper than Python's JSON parser recurses was a 500 with a traceback; an
    input of the wrong shape reached the model's kernels (a 2-D tensor for an export's
    `serving_pixels` failed a oneDNN CHECK and killed the stand-in's process)."""
    module = tf.Module()
    module.serve = tf.function(
        lambda x: {"y": tf.reduce_sum(x, axis=1)},
        input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")],
    )
    (tmp_path / "r").mkdir()
    tf.saved_model.save(
        module, str(tmp_path / "r" / "1"), signatures={"serving_default": module.serve}
    )
    servables = TFServingREST(tmp_path, "r", max_num_load_retries=0)
    client = TestClient(servables.app)
    url = "/v1/models/r:predict"
    fine = client.post(url, json={"instances": [[1.0, 2.0, 3.0]]})
    assert (fine.status_code, fine.json()) == (200, {"predictions": [6.0]})
    message = "input x has shape [1, 2], where the signature takes [None, 3] (None: any size)"
    for body in ({"instances": [[1.0, 2.0]]}, {"inputs": {"x": [[1.0, 2.0]]}}):
        response = client.post(url, json=body)
        assert (response.status_code, response.json()) == (400, {"error": message}), body
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post(url, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": "JSON Parse error: The document is nested too deeply"}
    with grpc_channel(servables) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "r"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0]], dtype=tf.float32))
        with pytest.raises(grpc.RpcError) as failed:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == message


def test_predict_takes_named_row_inputs_and_checks_base64(tmp_path: pathlib.Path) -> None:
    """json_tensor.cc: instances may be objects keyed by input name; bad base64 is
    "Unable to base64 decode", wrapped in the element's error in row format."""
    (tmp_path / "b").mkdir()
    save_bytes_model(tmp_path / "b" / "1")
    client = TestClient(TFServingREST(tmp_path, "b", max_num_load_retries=0).app)
    encoded = base64.b64encode(b"abc").decode()
    row = client.post(
        "/v1/models/b:predict", json={"instances": [{"image_bytes": {"b64": encoded}}]}
    )
    assert row.status_code == 200, row.text
    assert sorted(row.json()["predictions"][0].items()) == [
        ("echo_bytes", {"b64": encoded}),
        ("length", 3),
    ]
    columnar = client.post("/v1/models/b:predict", json={"inputs": {"b64": "@@@"}})
    assert (columnar.status_code, columnar.json()) == (400, {"error": "Unable to base64 decode"})
    bad_row = client.post("/v1/models/b:predict", json={"instances": [{"b64": "@@@"}]})
    assert bad_row.json() == {
        "error": "Failed to process element: 0 of 'instances' list. "
        "Error: INVALID_ARGUMENT: Unable to base64 decode"
    }
    wrong_key = client.post("/v1/models/b:predict", json={"instances": [{"image": "x"}]})
    assert wrong_key.json()["error"] == (
        "Failed to process element: 0 key: image of 'instances' list. "
        "Error: INVALID_ARGUMENT: JSON object: does not have named input: image"
    )


def test_float_outputs_are_written_as_tf_serving_writes_them(client: TestClient) -> None:
    """json_tensor.cc WriteDecimal(): float32 precision, `.0` on whole numbers, NaN/Infinity."""
    body = '{"instances": [0.3449514806270599, 2, 0.1, 1e-05, NaN, -Infinity]}'
    answer = client.post(
        "/v1/models/m/versions/1:predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.text.replace(" ", "") == (
        '{"predictions":[0.344951481,2.0,0.1,1e-05,NaN,-Infinity]}'
    )


def test_failed_loads_are_retried_in_state_loading(tmp_path: pathlib.Path) -> None:
    """basic_manager.cc: max_num_load_retries more attempts, load_retry_interval_micros apart,
    LOADING meanwhile, then END with the failure's code."""
    (tmp_path / "m").mkdir()
    save_version(tmp_path / "m" / "1", 1.0)
    servables = TFServingREST(
        tmp_path, "m", num_versions=None, max_num_load_retries=2, load_retry_interval_micros=400_000
    )
    client = TestClient(servables.app)
    (tmp_path / "m" / "2").mkdir()
    started = time.monotonic()
    poll = threading.Thread(target=servables.poll)
    poll.start()
    while len(found := versions(client.get("/v1/models/m").json())) < 2:  # 2 is seen
        assert time.monotonic() - started < 30, found
        time.sleep(0.01)
    assert found == [("2", "LOADING"), ("1", "AVAILABLE")]
    poll.join(timeout=60)
    assert time.monotonic() - started >= 0.8  # two retries, 0.4 s apart
    status = client.get("/v1/models/m/versions/2").json()["model_version_status"][0]
    assert status["state"] == "END" and status["status"]["error_code"] == "NOT_FOUND"


def test_deleting_the_newest_version_serves_the_previous_one(tmp_path: pathlib.Path) -> None:
    """file_system_storage_path_source.cc aspires the newest version left on disk;
    availability_preserving_policy.cc loads it, then unloads the deleted one (END). A version
    unloaded before is a new servable when aspired again (aspired_versions_manager.cc)."""
    base = tmp_path / "m"
    base.mkdir()
    save_version(base / "1", 1.0)
    servables = TFServingREST(tmp_path, "m", num_versions=1, max_num_load_retries=0)
    client = TestClient(servables.app)
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    for _ in range(2):  # deploy version 2, then roll it back by deleting its folder
        save_version(base / "2", 2.0)
        servables.poll()
        assert versions(client.get("/v1/models/m").json()) == [("2", "AVAILABLE"), ("1", "END")]
        shutil.rmtree(base / "2")
        servables.poll()
        assert versions(client.get("/v1/models/m").json()) == [("2", "END"), ("1", "AVAILABLE")]
        assert client.post("/v1/models/m:predict", json={"instances": [3.0]}).json() == {
            "predictions": [3.0]
        }
        assert client.get("/v1/models/m/metadata").json()["model_spec"]["version"] == "1"
        gone = client.post("/v1/models/m/versions/2:predict", json={"instances": [3.0]})
        assert (gone.status_code, gone.json()) == (
            404,
            {"error": "Servable not found for request: Specific(m, 2)"},
        )
        with grpc_channel(servables) as channel:
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"})
            )
            assert [(s.version, names(s.state)) for s in status.model_version_status] == [
                (2, "END"),
                (1, "AVAILABLE"),
            ]
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest(model_spec={"name": "m"})
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([3.0], np.float32)))
            answer = stub.Predict(request)
            assert answer.model_spec.version.value == 1
            assert tf.make_ndarray(answer.outputs["y"]).tolist() == [3.0]
            metadata = stub.GetModelMetadata(
                get_model_metadata_pb2.GetModelMetadataRequest(
                    model_spec={"name": "m"}, metadata_field=["signature_def"]
                )
            )
            assert metadata.model_spec.version.value == 1
    shutil.rmtree(base / "1")  # no version left: none AVAILABLE, nothing to serve
    servables.poll()
    assert versions(client.get("/v1/models/m").json()) == [("2", "END"), ("1", "END")]
    empty = client.post("/v1/models/m:predict", json={"instances": [3.0]})
    assert (empty.status_code, empty.json()) == (
        404,
        {"error": "Servable not found for request: Latest(m)"},
    )


def test_batching_runs_concurrent_calls_as_one_batch(tmp_path: pathlib.Path) -> None:
    """batching_session.cc: with --enable_batching, concurrent calls of a signature join one
    batch (run once, outputs split back by rows), and the batch's status is every call's: a
    value the model refuses fails the other calls of its batch too. shared_batch_scheduler.h:
    a call over max_batch_size rows is refused."""
    module = tf.Module()
    module.serve = tf.function(
        lambda text: {
            "number": tf.strings.to_number(text),
            "rows": tf.shape(text)[:1] + 0 * tf.strings.length(text),
        },
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    (tmp_path / "n").mkdir()
    tf.saved_model.save(
        module, str(tmp_path / "n" / "1"), signatures={"serving_default": module.serve}
    )
    # A batch runs when two rows have come (the timeout is far longer than any test).
    servables = TFServingREST(
        tmp_path, "n", max_num_load_retries=0, batching=Batching(2, 600_000_000)
    )
    client = TestClient(servables.app)

    def together(*texts: str) -> list[tuple[int, dict]]:
        answers: list = [None] * len(texts)

        def post(index: int) -> None:
            answer = client.post("/v1/models/n:predict", json={"instances": [texts[index]]})
            answers[index] = (answer.status_code, answer.json())

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(texts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        return answers

    # One batch of two rows: each call gets its own row back, and `rows` says they ran as one.
    assert sorted(together("1.5", "2.5"), key=lambda a: a[1]["predictions"][0]["number"]) == [
        (200, {"predictions": [{"number": 1.5, "rows": 2}]}),
        (200, {"predictions": [{"number": 2.5, "rows": 2}]}),
    ]
    first, second = together("1.5", "x")
    assert first[0] == second[0] == 400, (first, second)
    assert first == second and "x" in first[1]["error"]  # the good value failed with the bad
    big = client.post("/v1/models/n:predict", json={"instances": ["1", "2", "3"]})
    assert (big.status_code, big.json()) == (
        400,
        {"error": "Task size 3 is larger than maximum input batch size 2"},
    )


def test_command_line_batching_follows_the_parameters_file() -> None:
    """server.cc: --enable_batching with --batching_parameters_file (the compose stack's);
    without the file, BatchingParameters' defaults; without --enable_batching, no batching."""
    from serving.tfserving_standin.__main__ import Options, batching_from_options

    config = pathlib.Path(__file__).parents[2] / "serving" / "tfserving" / "batching.config"
    on = Options(enable_batching=True, batching_parameters_file=str(config))
    assert batching_from_options(on) == Batching(max_batch_size=32, batch_timeout_micros=2000)
    assert batching_from_options(Options(enable_batching=True)) == Batching(1000, 0)
    assert batching_from_options(Options()) is None
