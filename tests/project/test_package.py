"""The habits of a well-kept package: license, type markers, changelog, pre-commit hooks."""

import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_license_file_is_the_one_pyproject_declares():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"  # an SPDX expression
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_both_packages_ship_a_py_typed_marker():
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package, folder in (
        ("tf_alexnet", REPO / "tf_alexnet"),
        ("tf_alexnet_serving", REPO / "serving" / "tf_alexnet_serving"),
    ):
        assert "py.typed" in package_data[package]
        assert (folder / "py.typed").is_file()


def test_the_changelog_keeps_an_unreleased_section():
    text = (REPO / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in text
    headings = re.findall(r"^## \[(.+?)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert "### Added" in text


def test_pre_commit_runs_what_scripts_test_sh_runs():
    script = (REPO / "scripts" / "test.sh").read_text()
    checks = re.findall(r'^echo "== (.+?)"; (.+)$', script, re.MULTILINE)
    commands = {name: command for name, command in checks if name != "pytest"}
    assert set(commands) == {"ruff check", "ruff format --check", "mypy"}
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"
    hooks = {hook["name"]: hook for hook in repo["hooks"]}
    assert set(hooks) == set(commands)
    for name, command in commands.items():
        entry = hooks[name]["entry"]
        assert entry.startswith(".venv/bin/") and hooks[name]["language"] == "system"
        # The same tool and arguments as the script (which runs it over the whole tree).
        assert entry.removeprefix(".venv/bin/").startswith(command.removesuffix(" ."))
    assert hooks["mypy"]["pass_filenames"] is False  # mypy checks the configured packages


def _minimum(requirement: str) -> Version:
    (bound,) = [s for s in Requirement(requirement).specifier if s.operator == ">="]
    return Version(bound.version)


def test_the_serve_extra_asks_for_what_the_facade_imports():
    """Each lower bound holds what the facade imports from that package. inputs.py imports
    python-multipart's header limits (`DEFAULT_MAX_HEADER_COUNT`, `DEFAULT_MAX_HEADER_SIZE`),
    which came in 0.0.27: with the 0.0.13 the extra allowed, `tf-alexnet serve` did not start
    ("cannot import name 'DEFAULT_MAX_HEADER_COUNT'"), and reinstalling the extra kept it.
    (Checked by hand against each lowest version: pip install 'starlette==1.7.0' ..., then
    tests/serving/test_serving_limits.py.)"""
    serve = {Requirement(r).name: r for r in PYPROJECT["project"]["optional-dependencies"]["serve"]}
    facade = REPO / "serving" / "tf_alexnet_serving"
    assert "DEFAULT_MAX_HEADER_COUNT" in (facade / "inputs.py").read_text()
    assert _minimum(serve["python-multipart"]) >= Version("0.0.27")
    # middleware.cors_headers decides as Starlette's CORSMiddleware has since 1.7 (its
    # `allow_credentials` attribute, `Vary: Origin` on every answer): with CORS_ORIGINS set, a
    # refusal made below the app (431, 408, 503) got no answer at all on 0.40 to 0.52, which
    # the extra allowed (AttributeError), and other CORS headers than the routes' before 1.7.
    assert "cors.allow_credentials" in (facade / "middleware.py").read_text()
    assert _minimum(serve["starlette"]) >= Version("1.7")
    # FastAPI 0.115 to 0.132 ask for Starlette < 1.0, so the floor above raised FastAPI's in
    # effect: say so (0.133.0 with Starlette 1.7.0 passed tests/serving/test_serving*.py).
    assert _minimum(serve["fastapi"]) >= Version("0.133")
