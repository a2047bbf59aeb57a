"""The compose files validate, and agree with the Dockerfile, the trainer script and the code."""

from __future__ import annotations

import os
import pathlib
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.docker.common import (
    COMPOSE,
    COMPOSE_GPU,
    COMPOSE_OWN_DATA,
    COMPOSE_SMOKE,
    COMPOSE_STANDIN,
    DOCKERFILE,
    OWN_DATA_ENV,
    ROOT,
    TFSERVING,
    TRAINER_SCRIPT,
    api_settings,
    compose_command,
    compose_config,
    dockerfile_stages,
    flags,
    host_addresses,
    load_yaml,
    mounted_file,
    published,
    volume_at,
)
from tests.docker.text_proto import parse_text_proto
from tf_alexnet import contract

SMOKE_ENV = {"FASHION_MNIST_DIR": "/tmp"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)["services"]


@pytest.mark.parametrize(
    ("files", "env"),
    [
        ((COMPOSE,), {}),
        ((COMPOSE, COMPOSE_GPU), {}),
        ((COMPOSE, COMPOSE_OWN_DATA), OWN_DATA_ENV),
        ((COMPOSE, COMPOSE_SMOKE, COMPOSE_STANDIN), SMOKE_ENV),
    ],
    ids=["base", "gpu", "own-data", "smoke-standin"],
)
def test_compose_files_validate(files: tuple[pathlib.Path, ...], env: dict[str, str]) -> None:
    services = compose_config(*files, env=env)["services"]
    assert set(services) == {"trainer", "tfserving", "api"}


def test_every_service_runs_under_an_init_that_passes_sigterm_on(compose) -> None:
    """PID 1 ignores a SIGTERM it has no handler for: `docker stop` would wait 10 s and kill."""
    assert {name: service.get("init") for name, service in compose.items()} == {
        "trainer": True,
        "tfserving": True,
        "api": True,
    }


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
    # Long syntax: Docker refuses a folder that does not exist (the short one made an empty
    # folder, root's, and training then said the container's path held no class folders).
    bind = {"type": "bind", "source": "/tmp", "target": folder, "read_only": True}
    assert bind in [{k: v.get(k) for k in bind} for v in trainer["volumes"] if isinstance(v, dict)]
    settings = api_settings(services["api"]["environment"], monkeypatch)
    assert settings.class_names == ["cat", "dog"]
    # CLASS_NAMES is optional: without it the facade uses the served model's own names.
    env = {k: v for k, v in OWN_DATA_ENV.items() if k != "CLASS_NAMES"}
    services = compose_config(COMPOSE, COMPOSE_OWN_DATA, env=env)["services"]
    assert api_settings(services["api"]["environment"], monkeypatch).class_names is None


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


def test_smoke_overrides_change_only_images_and_the_data_mount() -> None:
    """The smoke test runs the project's stack, not a variant of it."""
    base = compose_config(COMPOSE)["services"]
    smoke = compose_config(COMPOSE, COMPOSE_SMOKE, COMPOSE_STANDIN, env=SMOKE_ENV)["services"]
    for name in base:
        changed = {
            key for key in base[name] | smoke[name] if base[name].get(key) != smoke[name].get(key)
        }
        assert changed <= {"image", "volumes"}, (name, changed)
        assert smoke[name]["image"].startswith("tf-alexnet-smoke-"), "never the user's images"

    def volumes(service: dict[str, Any]) -> set[str]:
        return {str(volume) for volume in service.get("volumes", [])}

    assert volumes(smoke["trainer"]) - volumes(base["trainer"]) == {"/tmp:/data/manual:ro"}
    assert volumes(smoke["trainer"]) >= volumes(base["trainer"])
    for name in ("tfserving", "api"):
        assert volumes(smoke[name]) == volumes(base[name]), name


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
    services = compose_config(COMPOSE)["services"]
    assert published(services["tfserving"]) == {8500: 8500, 8501: 8501}
    assert published(services["api"]) == {8000: 8000}
    moved = compose_config(COMPOSE, env={"API_PORT": "18000", "TFSERVING_REST_PORT": "18501"})
    assert published(moved["services"]["api"]) == {8000: 18000}
    assert published(moved["services"]["tfserving"]) == {8500: 8500, 8501: 18501}
    # TF Serving answers anyone, without the facade's API key and limits: this machine only,
    # unless asked (on every interface by default, the key was bypassed from other hosts).
    assert host_addresses(services["tfserving"]) == {"127.0.0.1"}
    assert host_addresses(services["api"]) <= {None, "0.0.0.0"}
    opened = compose_config(COMPOSE, env={"TFSERVING_HOST": "0.0.0.0"})["services"]["tfserving"]
    assert host_addresses(opened) == {"0.0.0.0"}
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


def test_docs_say_how_docker_compose_v1_builds_with_buildkit() -> None:
    """`docker-compose` 1.29, which the docs name as enough, builds with the engine's legacy
    builder unless told otherwise, and that builder refuses the Dockerfile's first `RUN --mount`
    ("the --mount option requires BuildKit"): `up -d --build` as documented failed. Every place
    that shows the build command says how to build with v1."""
    assert "RUN --mount" in DOCKERFILE.read_text()
    command = "COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1 docker-compose up -d --build"
    for path in (ROOT / "docs" / "docker.md", ROOT / "README.md", COMPOSE):
        assert command in " ".join(path.read_text().split()), path.name


def test_docs_say_what_a_refused_api_setting_looks_like_under_compose(
    compose: dict[str, Any],
) -> None:
    """A facade setting it refuses made the api restart-loop under Compose with `up -d`
    reporting success, and nothing said so: the docs name the symptom, where the one line is,
    and why the restart policy stays as it is."""
    assert compose["api"]["restart"] == "unless-stopped"
    text = " ".join((ROOT / "docs" / "docker.md").read_text().split())
    for said in ("`Restarting`", "docker compose logs api", "`restart: unless-stopped`"):
        assert said in text, said


def test_own_data_runs_are_not_named_after_the_preset() -> None:
    """Without RUN_NAME, the own-data trainer's run was `quick`, the Fashion-MNIST run's name:
    an `up` on volumes that held that run found it exported and served Fashion-MNIST, and a
    second `up` that left out the first one's RUN_NAME trained again (reproduced: `down`, `up`
    with IMAGE_FOLDER alone published version 2). RUN_NAME still wins when set."""
    for run_name, expected in (("", "own-data"), ("my-images", "my-images")):
        env = {**OWN_DATA_ENV, "RUN_NAME": run_name}
        trainer = compose_config(COMPOSE, COMPOSE_OWN_DATA, env=env)["services"]["trainer"]
        assert trainer["environment"]["RUN_NAME"] == expected
    text = " ".join((ROOT / "docs" / "docker.md").read_text().split())
    assert "every later `up` the same `RUN_NAME`" in text
