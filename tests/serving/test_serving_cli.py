"""`tf-alexnet serve`'s own refusals, in a fresh process."""

import os
import socket

import pytest

from tests.conftest import run_cli


def test_a_busy_ipv6_address_is_named_with_brackets(tmp_path):
    """`--host ::` on a busy port said "Cannot listen on :::8000", an address no one writes
    (and `::1` as "::1:8000", which reads as another IPv6 address)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as taken:
        try:
            taken.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        taken.listen()
        port = taken.getsockname()[1]
        refused = run_cli(
            "serve", "--model-base-path", str(tmp_path), "--host", "::1", "--port", str(port)
        )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"tf-alexnet: error: Cannot listen on [::1]:{port}: Address already in use."
    ]


@pytest.mark.parametrize("host", ["", " "])
def test_an_empty_host_is_refused_not_every_interface(host):
    """`--host ""` (a shell variable left blank) listened on every interface, silently."""
    from tf_alexnet_serving.cli import check_can_listen

    from tf_alexnet.errors import UserError

    with pytest.raises(UserError) as refused:
        check_can_listen(host, 0)
    assert str(refused.value) == (
        "Cannot listen on an empty host: pass --host 127.0.0.1 (this machine only) or "
        f"--host 0.0.0.0 (every interface). Received: --host {host!r}"
    )


def test_the_page_is_read_as_utf8_whatever_the_locale():
    """page.html holds non-ASCII text ("classifying…"): read in the locale's encoding,
    `tf-alexnet serve` did not start where that is ASCII ("'ascii' codec can't decode byte
    0xe2"), and a Latin-1 locale would have served the page garbled."""
    import subprocess
    import sys

    from tests.conftest import REPO

    script = (
        "import asyncio, locale\n"
        "from tf_alexnet_serving.routes import build_router\n"
        "assert locale.getpreferredencoding(False) != 'UTF-8'\n"
        "(page,) = [r for r in build_router(5, 4).routes if r.path == '/' and 'GET' in r.methods]\n"
        "html = asyncio.run(page.endpoint())\n"
        "print(ascii(html[html.index('classifying') :][:12]))\n"
    )
    ascii_locale = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **ascii_locale},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ascii("classifying\u2026")
