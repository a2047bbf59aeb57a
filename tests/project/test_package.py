"""The habits of a well-kept package: license, type markers, changelog, pre-commit hooks."""

import re
import tomllib

import yaml

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
