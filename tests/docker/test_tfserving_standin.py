"""The TF Serving stand-in (serving/tfserving_standin/) follows TF Serving's version lifecycle.

Real SavedModels (a tiny `y = k * x` signature per version) and the stand-in's own command line,
as the `tfserving-standin` image runs it for the compose smoke test: its flags, and the start-ups
TF Serving refuses (model_servers/main.cc, server.cc, server_core.cc). The protocol itself:
tests/serving/test_standin_protocol.py.
"""

from __future__ import annotations

import pathlib
import shutil
import signal
import subprocess
import sys
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.tfserving_standin.server import TFServingREST
from tests.conftest import free_port
from tests.docker.common import ROOT


def save_version(folder: pathlib.Path, factor: float) -> None:
    """A SavedModel whose `serving_default` answers {"y": factor * x}; written, then renamed
    into place as the exporter does (TF Serving ignores the temporary name)."""
    module = tf.Module()
    module.factor = tf.Variable(factor)
    module.serve = tf.function(
        lambda x: {"y": module.factor * x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    temporary = folder.parent / f".tmp-{folder.name}"
    tf.saved_model.save(module, str(temporary), signatures={"serving_default": module.serve})
    temporary.rename(folder)


def states(client: TestClient | httpx.Client, path: str = "") -> dict[str, str]:
    answer = client.get(f"/v1/models/m{path}").json()
    return {s["version"]: s["state"] for s in answer["model_version_status"]}


def predicted(client: TestClient | httpx.Client, path: str = "") -> float:
    answer = client.post(f"/v1/models/m{path}:predict", json={"instances": [1.0]})
    assert answer.status_code == 200, answer.text
    return float(answer.json()["predictions"][0])


def test_new_versions_load_before_old_ones_unload(tmp_path: pathlib.Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    save_version(base / "1", 1.0)
    servables = TFServingREST(tmp_path, "m", num_versions=1, max_num_load_retries=0)
    client = TestClient(servables.app)
    assert states(client) == {"1": "AVAILABLE"}

    shutil.copytree(base / "1", base / ".tmp-9")  # not an integer: never loaded
    save_version(base / "2", 2.0)
    servables.poll()
    assert states(client) == {"2": "AVAILABLE", "1": "END"}
    assert predicted(client) == 2.0
    assert states(client, "/versions/1") == {"1": "END"}
    unloaded = client.post("/v1/models/m/versions/1:predict", json={"instances": [1.0]})
    assert unloaded.status_code == 404
    assert unloaded.json() == {"error": "Servable not found for request: Specific(m, 1)"}

    (base / "3").mkdir()  # a version that cannot load: reported, and 2 keeps serving
    servables.poll()
    status = client.get("/v1/models/m/versions/3").json()["model_version_status"][0]
    assert status["state"] == "END" and status["status"]["error_code"] == "NOT_FOUND"
    assert status["status"]["error_message"]
    assert predicted(client) == 2.0
    missing = client.get("/v1/models/m/versions/7")
    assert missing.status_code == 404 and "version 7" in missing.json()["error"]


def test_command_line_takes_tfserving_flags_and_polls(tmp_path: pathlib.Path) -> None:
    base = tmp_path / "models" / "m"
    base.mkdir(parents=True)
    save_version(base / "1", 1.0)
    config = tmp_path / "models.config"
    config.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{base}' model_platform: 'tensorflow'"
        " model_version_policy { latest { num_versions: 1 } }"
        " version_labels { key: 'stable' value: 1 } } }"
    )
    rest, port = free_port(), free_port()
    command = [sys.executable, "-m", "serving.tfserving_standin", f"--port={port}"]
    command += [f"--rest_api_port={rest}", f"--model_config_file={config}"]
    # No --enable_batching: TF Serving's batching refuses a call of over 1,000 rows (the
    # 1,500,000-row request below) unless max_batch_size allows it.
    command += ["--file_system_poll_wait_seconds=1"]
    command += ["--allow_version_labels_for_unavailable_models"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{rest}", timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    assert states(client) == {"1": "AVAILABLE"}
                    break
                except httpx.TransportError:
                    assert server.poll() is None and time.monotonic() < deadline
                    time.sleep(0.5)
            assert predicted(client) == 1.0
            assert predicted(client, "/labels/stable") == 1.0
            with grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 2**31 - 1)]
            ) as channel:  # TF Serving takes messages up to 2 GiB - 1, not gRPC's 4 MiB
                request = predict_pb2.PredictRequest(model_spec={"name": "m"})
                big = np.ones(1_500_000, np.float32)
                request.inputs["x"].CopyFrom(tf.make_tensor_proto(big))
                answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
                assert tf.make_ndarray(answer.outputs["y"]).shape == big.shape
            save_version(base / "2", 2.0)
            deadline = time.monotonic() + 30
            while states(client).get("2") != "AVAILABLE":
                assert time.monotonic() < deadline, "version 2 was not picked up"
                time.sleep(0.2)
            assert predicted(client) == 2.0
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught


def labelled_config(tmp_path: pathlib.Path, base: pathlib.Path) -> pathlib.Path:
    config = tmp_path / "models.config"
    config.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{base}' model_platform: 'tensorflow'"
        " version_labels { key: 'stable' value: 1 } } }"
    )
    return config


@pytest.mark.parametrize(
    ("case", "stream", "message"),
    [
        (
            "label",  # server_core.cc UpdateModelVersionLabelMap(), before any version loads
            "stdout",
            "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to "
            "version 1 of model m, which is not currently available for inference\n",
        ),
        (
            "poll_seconds",  # main.cc: an int32 flag; tsl command_line_flags.cc
            "stderr",
            "Couldn't interpret value 0.5 for flag file_system_poll_wait_seconds.\n",
        ),
        (
            "batching",  # server.cc BuildAndStart()
            "stdout",
            "Failed to start server. Error: INVALID_ARGUMENT: server_options."
            "batching_parameters_file is set without setting server_options.enable_batching to "
            "true.\n",
        ),
        (
            "unloadable",  # load_servables_fast.cc: the first version must become available
            "stdout",
            "Failed to start server. Error: UNKNOWN: Some servables did not become available: "
            "{{name: m version: 2}, }\n",
        ),
    ],
    ids=["label", "poll_seconds", "batching", "unloadable"],
)
def test_command_line_refuses_to_start_as_tf_serving_does(
    tmp_path: pathlib.Path, case: str, stream: str, message: str
) -> None:
    base = tmp_path / "models" / "m"
    base.mkdir(parents=True)
    save_version(base / "1", 1.0)
    command = [sys.executable, "-m", "serving.tfserving_standin", f"--port={free_port()}"]
    if case == "label":
        command += [f"--model_config_file={labelled_config(tmp_path, base)}"]
    else:
        command += ["--model_name=m", f"--model_base_path={base}"]
    if case == "poll_seconds":
        command += ["--file_system_poll_wait_seconds=0.5"]
    if case == "batching":
        command += [f"--batching_parameters_file={tmp_path / 'batching.config'}"]
    if case == "unloadable":
        (base / "2").mkdir()  # the newest version: no SavedModel in it
        command += ["--max_num_load_retries=0"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the stand-in started where TF Serving refuses to")
    assert done.returncode == 255  # main.cc returns -1
    assert getattr(done, stream).endswith(message), (done.stdout, done.stderr)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_emulated_flags(flag: str) -> None:
    """main.cc prints tsl's Flags::Usage() text on --help: here, the flags the stand-in honours."""
    command = [sys.executable, "-m", "serving.tfserving_standin", flag]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.startswith("usage: tensorflow_model_server")
    for name in ("port", "rest_api_port", "model_name", "model_base_path", "model_config_file"):
        assert f"\t--{name}=" in done.stdout
    assert "\t--file_system_poll_wait_seconds=1\tint32" in done.stdout
    assert "Failed to start server" not in done.stdout and "ignoring" not in done.stdout
