"""Smoke test of the whole compose stack on a real Docker engine, on real Fashion-MNIST.

    python scripts/compose_smoke.py [--data ../shared/data/fashion-mnist] [--summary FILE]
    python scripts/compose_smoke.py --check-engine    # why no engine can be used, if none
    python scripts/compose_smoke.py --prepare         # only build the images (step 1)

1. Builds the images with BuildKit (`--network host` for pip), from `python:3.11.13-slim-bookworm`
   when it can be pulled, else from a Debian bookworm base made with debootstrap (never under the
   official image's name). TF Serving is `tensorflow/serving:2.21.0` when `docker pull` gets it,
   else the project's stand-in (the Dockerfile's `tfserving-standin` target); one line says which.
2. `up`: the trainer trains a tiny run (one epoch on 3,000 images of the offline originals,
   validation on 1,200) and exports version 1 as uid 10001; TF Serving and the facade start in
   dependency order, healthy.
3. `POST /predict` through the stack on 320 real test images: every class id equals the local
   (embedded) backend's on the same exported version, image by image.
4. Retrains (version 2) while a client polls `/predict`: no failed request, the version moves
   from 1 to 2 and never back.
5. Stops the `tfserving` container: the facade answers 503 with a JSON error, quickly; starts it
   again: the facade recovers by itself.
6. `down` and `up` again: serving starts without training again.
Always ends with `down -v` of its own project (tf-alexnet-smoke); its images (tf-alexnet-smoke-*)
stay as a build cache. It never touches other containers, images or volumes.

Settings: DOCKER (the client; default Debian's docker.io client, which builds with BuildKit),
COMPOSE (default `docker-compose`, else `docker compose`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

from compose_images import (  # scripts/compose_images.py, beside this file
    SmokeError,
    Timings,
    check,
    compose_base,
    docker_client,
    engine_problem,
    log,
    prepare,
    run,
)
from compose_stack import (  # scripts/compose_stack.py, beside this file
    API_TIMEOUT_S,
    DEFAULT_DATA,
    MODEL_NAME,
    TEST_IMAGES,
    Poller,
    Stack,
    finished,
    local_class_ids,
    predict_all,
    started,
    test_pngs,
)

# --- the scenario ------------------------------------------------------------------------------


def smoke(data: pathlib.Path, summary: dict[str, Any]) -> None:
    import httpx

    timings = Timings()
    summary["timings_s"] = timings.phases
    docker = docker_client()
    version = run([docker, "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    summary["engine"] = f"Docker Engine {version}"
    compose_version = run([*compose_base(), "version", "--short"], check_rc=False).stdout
    summary["compose"] = compose_version.strip()

    with timings.phase("images (waiting for a --prepare run, if one is building)"):
        standin = prepare(docker, summary, timings)

    stack = Stack(docker, standin, data)
    stack.down()  # a previous run's leftovers, of this project only
    try:
        with timings.phase("up: train v1, then tfserving, then api healthy"):
            stack("up", "--detach", "--no-build", timeout=1800)
            stack.wait_healthy("api")
        trainer, tfserving, api = (stack.inspect(s) for s in ("trainer", "tfserving", "api"))
        check(trainer["State"]["ExitCode"] == 0, "the trainer failed")
        check(finished(trainer) <= started(tfserving), "tfserving started before training ended")
        check(started(tfserving) <= started(api), "the api started before tfserving")
        no_init = [c["Name"] for c in (trainer, tfserving, api) if not c["HostConfig"].get("Init")]
        check(not no_init, f"not under an init (docker stop would wait 10 s): {no_init}")
        owner = stack(
            "run", "--rm", "--no-deps", "-T", "--entrypoint", "stat", "trainer",
            "-c", "%u:%g %n", f"/models/{MODEL_NAME}/1", f"/models/{MODEL_NAME}/1/saved_model.pb",
        )  # fmt: skip
        check(all(line.startswith("10001:10001 ") for line in owner.split("\n") if line), owner)
        log(f"version 1 exported as uid 10001: {owner.split()}")

        with timings.phase(f"predict {TEST_IMAGES} real images: stack vs local backend"):
            pngs = test_pngs(data, TEST_IMAGES)
            with httpx.Client(timeout=API_TIMEOUT_S + 10) as client:
                stacked = predict_all(client, f"{stack.api}/predict", pngs)
                check(client.get(f"{stack.api}/readyz").json()["version"] == 1, "not version 1")
                if not standin:  # the stand-in has no Prometheus endpoint
                    metrics = client.get(f"{stack.tfserving}/monitoring/prometheus/metrics")
                    check(":tensorflow:serving:" in metrics.text, "no TF Serving metrics")
            with tempfile.TemporaryDirectory() as tmp:
                models = pathlib.Path(tmp) / MODEL_NAME
                models.mkdir()
                container = stack.container("tfserving")
                run([docker, "cp", f"{container}:/models/{MODEL_NAME}/1", str(models / "1")])
                local = local_class_ids(pathlib.Path(tmp), pngs)
            differ = [i for i, (a, b) in enumerate(zip(stacked, local, strict=True)) if a != b]
            check(not differ, f"class ids differ from the local backend's at images {differ}")
            summary["images_compared"] = len(pngs)
            log(f"{len(pngs)} images: the stack's class ids equal the local backend's")

        with timings.phase("retrain: version 2 while polling /predict"):
            poller = Poller(f"{stack.api}/predict", pngs[0])
            poller.start()
            stack("run", "--rm", "-T", "trainer", RUN_NAME="smoke-2", timeout=1800)
            deadline = time.monotonic() + 120
            while not poller.answers or poller.answers[-1][1] != 2:
                check(time.monotonic() < deadline, "the facade did not move to version 2")
                time.sleep(0.5)
            time.sleep(8)  # keep polling while TF Serving unloads version 1
            poller.stop.set()
            poller.join()
            answers = poller.answers
            failed = [a for a in answers if a[0] != 200]
            versions = [v for _, v in answers if v is not None]
            check(not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}")
            check(versions == sorted(versions) and set(versions) == {1, 2}, "not 1 then 2")
            status = httpx.get(f"{stack.tfserving}/v1/models/{MODEL_NAME}").json()
            states = {s["version"]: s["state"] for s in status["model_version_status"]}
            check(states.get("2") == "AVAILABLE" and states.get("1") != "AVAILABLE", states)
            summary["rollover_requests"] = len(answers)
            log(f"{len(answers)} requests during the rollover, none failed; {states}")

        with timings.phase("tfserving stopped: 503, then recovery"):
            api_started = started(stack.inspect("api"))
            stack("stop", "tfserving")
            start = time.monotonic()
            response = httpx.post(
                f"{stack.api}/predict",
                files={"file": ("p.png", pngs[0])},
                timeout=API_TIMEOUT_S + 10,
            )
            elapsed = time.monotonic() - start
            check(response.status_code == 503, f"{response.status_code}: {response.text}")
            check(response.json().get("detail"), response.text)  # a JSON error, named
            check(elapsed < API_TIMEOUT_S, f"the 503 took {elapsed:.1f} s")
            log(f"tfserving stopped: 503 in {elapsed:.2f} s: {response.json()}")
            summary["unavailable_503_after_s"] = round(elapsed, 2)
            stack("start", "tfserving")
            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    files = {"file": ("p.png", pngs[0])}
                    if httpx.post(f"{stack.api}/predict", files=files).status_code == 200:
                        break
                check(time.monotonic() < deadline, "the facade did not recover")
                time.sleep(1)
            check(started(stack.inspect("api")) == api_started, "the api was restarted")
            summary["recovered_after_s"] = round(time.monotonic() - start, 1)

        with timings.phase("down, up again: no training"):
            stack("down", "--timeout", "10")
            stack("up", "--detach", "--no-build", timeout=900)
            stack.wait_healthy("api")
            logs = stack("logs", "--no-color", "trainer")
            check("already exported" in logs, f"the trainer trained again:\n{logs[-2000:]}")
            answer = httpx.post(f"{stack.api}/predict", files={"file": ("p.png", pngs[0])})
            check(answer.status_code == 200, answer.text)
            check(answer.json()["model"]["version"] == 2, answer.text)
    except SmokeError:
        with contextlib.suppress(Exception):
            log("ps:\n" + stack("ps"))
            log("logs:\n" + stack("logs", "--no-color", "--tail", "60"))
        raise
    finally:
        with timings.phase("down -v"):
            stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--summary", type=pathlib.Path, help="write the results here (JSON)")
    parser.add_argument(
        "--check-engine",
        action="store_true",
        help="only say (one line, exit 3) why no engine can be used; exit 0 if one can",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only build the images (a later run waits for it, then finds them cached)",
    )
    args = parser.parse_args(argv)
    if args.check_engine:
        problem = engine_problem()
        if problem:
            print(problem)
        return 3 if problem else 0
    if not (args.data / "train-images-idx3-ubyte.gz").exists():
        print(f"compose_smoke: error: no Fashion-MNIST originals in {args.data}", file=sys.stderr)
        return 2
    problem = engine_problem()
    if problem:
        print(f"compose_smoke: error: no Docker engine: {problem}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {}
    start = time.monotonic()
    try:
        if args.prepare:
            timings = Timings()
            summary["timings_s"] = timings.phases
            prepare(docker_client(), summary, timings)
        else:
            smoke(args.data.resolve(), summary)
        summary["passed"] = True
    except SmokeError as err:
        summary["passed"] = False
        summary["error"] = str(err)
        log(f"FAILED: {err}")
    summary["total_s"] = round(time.monotonic() - start, 1)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2))
    log(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
