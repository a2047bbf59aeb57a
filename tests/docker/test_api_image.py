"""The slim `api` image's packages are enough for the facade: emulated, without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.docker.common import ROOT, locked

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
