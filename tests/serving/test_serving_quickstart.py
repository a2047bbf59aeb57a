"""`scripts/quickstart.sh`'s serving step beside another server on its port."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import REPO


class Impostor(BaseHTTPRequestHandler):
    """Another HTTP service on the port: ready, and with an answer to every prediction."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {"model": {"name": "other", "version": 7}, "predictions": [{"class_name": "Other"}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_quickstart_refuses_a_port_another_server_answers_on(model_base, tmp_path):
    """The readiness check found the other server's /readyz before `tf-alexnet serve` had
    even looked at the port: the example image was classified by the other server, and the
    quickstart printed its answer and "Done." (status 0)."""
    run_dir = tmp_path / "run"  # a finished, evaluated and exported run: straight to serving
    run_dir.mkdir()
    for name in ("metrics.json", "evaluation.txt", "exported.txt"):
        (run_dir / name).write_text("{}\n")
    other = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_address[1]
    try:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "quickstart.sh")],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "VENV": sys.prefix,
                "QUICKSTART_INSTALL": "0",
                "RUN_DIR": str(run_dir),
                "MODEL_BASE_PATH": str(model_base),
                "PORT": str(port),
                "QUICKSTART_SERVE": "once",
            },
        )
    finally:
        other.shutdown()
        other.server_close()
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Other" not in result.stdout and "Done." not in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        f"quickstart: port {port} is already in use (something answers on 127.0.0.1:{port}): "
        "stop it, or set PORT=... to another port"
    )
