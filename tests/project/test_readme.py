"""The README's Python examples run as written, on a model trained by the test suite."""

import importlib.util
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

README_MODEL = "runs/quick/best.keras"
"""The model the README's examples load: the quickstart's run."""

PREAMBLES = {"images": "import numpy as np\nimages = np.zeros((2, 40, 30, 3), np.uint8)\n"}
"""What an example leaves to the reader, given here (names it uses without defining them)."""


def _python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)


def test_the_readme_has_python_examples():
    examples = _python_examples()
    assert len(examples) >= 2 and all(README_MODEL in code for code in examples)


@pytest.mark.parametrize("index", range(len(_python_examples())))
def test_readme_python_example_runs(index, trained_run, tmp_path):
    code = _python_examples()[index]
    preamble = "".join(text for name, text in PREAMBLES.items() if re.search(rf"\b{name}\b", code))
    (tmp_path / README_MODEL).parent.mkdir(parents=True)
    shutil.copy(trained_run / "best.keras", tmp_path / README_MODEL)
    result = subprocess.run(
        [sys.executable, "-c", preamble + code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"README example {index + 1}:\n{result.stderr[-3000:]}"


def _setup_py():
    """setup.py as a module (its `setup()` runs only as a script)."""
    spec = importlib.util.spec_from_file_location("tf_alexnet_setup_py", REPO / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _github_slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(path) -> set[str]:
    prose = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {_github_slug(title) for title in re.findall(r"^#+\s+(.*)$", prose, re.M)}


DOCUMENTS = ["README.md", "docs/*.md", "docs/upstream/*.md", "examples/images/README.md"]


@pytest.mark.parametrize(
    "document",
    sorted({str(p.relative_to(REPO)) for pattern in DOCUMENTS for p in REPO.glob(pattern)}),
)
def test_relative_links_resolve_in_the_repository(document):
    """Where the files are browsed (a clone, GitHub), every relative link reaches its file and
    every `#anchor` a heading of it."""
    path = REPO / document
    for target in _setup_py().relative_links(path.read_text()):
        file, _, anchor = target.partition("#")
        destination = (path.parent / file) if file else path
        assert destination.exists(), f"{document}: {target} does not exist"
        if anchor and destination.suffix == ".md":
            assert anchor in _headings(destination), f"{document}: no heading #{anchor}"


def test_the_long_description_has_no_relative_link():
    """The README is the package's page on PyPI, where a relative link is dead: the built
    metadata's copy has none (each is absolute under [project.urls] Source, or text)."""
    assert re.findall(r"\]\((?![a-z]+:)", (REPO / "README.md").read_text())  # it has some
    result = subprocess.run(
        [sys.executable, "setup.py", "--long-description"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    description = result.stdout
    assert description.startswith("# tf_alexnet\n")
    assert _setup_py().relative_links(description) == []
    # The same words otherwise: the file each link named is still said.
    assert "docs/docker.md" in description and "## Which AlexNet?" in description


def test_relative_links_become_absolute_under_the_source_url():
    setup_py = _setup_py()
    readme = (REPO / "README.md").read_text()
    source = "https://github.com/someone/tf_alexnet"
    page = setup_py.pypi_readme(readme, source + "/")
    assert setup_py.relative_links(page) == []
    for target in setup_py.relative_links(readme):
        file, _, anchor = target.partition("#")
        url = f"{source}/blob/main/{file}" if file else source
        assert f"]({url}{'#' + anchor if anchor else ''})" in page, target
    # Code blocks are left as written; absolute links too.
    assert re.findall(r"^```.*?^```", page, re.M | re.S) == re.findall(
        r"^```.*?^```", readme, re.M | re.S
    )
    assert "](https://d2l.ai/chapter_convolutional-modern/alexnet.html)" in page


def test_without_a_source_url_a_relative_link_becomes_text_naming_its_file():
    pypi_readme = _setup_py().pypi_readme
    text = (
        "See [the curves](docs/b.md), [docs/p.md](docs/p.md), [Which?](#which), "
        "[x](https://e.org/y).\n```\n[kept](as/is.md)\n```\n"
    )
    assert pypi_readme(text, None) == (
        "See the curves (`docs/b.md`), docs/p.md, Which?, [x](https://e.org/y).\n"
        "```\n[kept](as/is.md)\n```\n"
    )


def test_the_source_url_is_read_from_project_urls():
    source_url = _setup_py().source_url
    assert source_url({"project": {"urls": {"Source": "https://x/y"}}}) == "https://x/y"
    assert source_url({"project": {"urls": {"Paper": "https://p"}}}) is None
    assert source_url({}) is None


def test_each_benchmark_row_names_its_benchmark_page():
    """A figure in the README's Benchmarks table can be checked: every row links to the
    page under docs/benchmarks/ that holds its runs and command."""
    section = (REPO / "README.md").read_text().split("\n## Benchmarks\n", 1)[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert len(rows) >= 8
    for row in rows:
        pages = re.findall(r"\]\((docs/benchmarks/[^)#]+\.md)(?:#[^)]*)?\)", row)
        assert pages, f"no benchmark page for: {row[:100]}"
        for page in pages:
            assert (REPO / page).is_file(), page


def test_the_layout_names_every_module_of_the_two_packages():
    """The README's Layout lists each file of `tf_alexnet/` and `tf_alexnet_serving/`: a
    module added without a line there left readers a file the map does not show."""
    section = (REPO / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ")[0]
    named = set(re.findall(r"[\w.]+\.(?:py|html)\b", section))
    for package in ("tf_alexnet", "serving/tf_alexnet_serving"):
        for path in sorted((REPO / package).iterdir()):
            if path.suffix in (".py", ".html") and path.name != "__init__.py":
                assert path.name in named, f"{package}/{path.name} is not in the README's Layout"


def test_the_documents_cite_only_pages_the_repository_has():
    """A Markdown file the README or docs name (a doc, a benchmark page) is one a reader can
    open: the AMX figures in docs/precision.md cited a REFERENCE.md never committed."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    names = {pathlib.PurePosixPath(name).name for name in tracked}
    for pattern in DOCUMENTS:
        for path in REPO.glob(pattern):
            for cited in re.findall(r"(?<![\w/.-])([\w./-]+\.md)\b", path.read_text()):
                name = pathlib.PurePosixPath(cited).name
                assert name in names, (
                    f"{path.relative_to(REPO)} cites {cited}, not in the repository"
                )


def _quoted_commands(text: str) -> list[str]:
    """The `tf-alexnet ...` command lines quoted in a Markdown text: in code spans and in
    code blocks, from `tf-alexnet` to the end of the command (not a pipe or a comment)."""
    blocks = re.findall(r"^ *```[\w-]*\n(.*?)^ *```", text, re.M | re.S)
    prose = re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)
    spans = re.findall(r"(?<!`)`{1,2}([^`]*?\btf-alexnet [^`]*)`", prose)
    lines = [line for block in blocks for line in block.splitlines()] + spans
    commands = []
    for line in lines:
        line = " ".join(line.split()).removeprefix("$ ")
        if "tf-alexnet " not in line or "`" in line:  # a code block's prose (the layout)
            continue
        command = line[line.index("tf-alexnet ") :]
        commands.append(re.split(r" (?:#|\||&&|;|>|2>|\|\|) ", command + " ")[0].strip())
    return commands


@pytest.mark.parametrize(
    "document",
    sorted({str(p.relative_to(REPO)) for pattern in DOCUMENTS for p in REPO.glob(pattern)}),
)
def test_each_quoted_command_is_one_tf_alexnet_takes(document):
    """Every `tf-alexnet` command line the README and docs quote parses: its command and
    flags exist and take the values shown (the synopsis, with its [OPTIONS], aside)."""
    from tf_alexnet.cli_parser import build_parser, parse_arguments

    for command in _quoted_commands((REPO / document).read_text()):
        argv = shlex.split(command)[1:]
        placeholder = any(re.fullmatch(r"[A-Z][A-Z_]+", word) for word in argv)
        if (
            len(argv) < 2
            or placeholder
            or any(mark in command for mark in "[|…")
            or "..." in command
        ):
            continue  # a command's name in prose, or the synopsis's notation
        try:
            parse_arguments(build_parser(), argv)
        except SystemExit as exit:
            assert exit.code == 0, f"{document}: {command}"


def test_the_readme_says_how_to_install_the_package_outside_a_clone():
    """The quickstart and `pip install -e` work in a clone only: the README also installs a
    built wheel, and every extra it names is one pyproject.toml declares."""
    readme = (REPO / "README.md").read_text()
    assert re.search(r"pip install 'dist/tf_alexnet-VERSION-py3-none-any\.whl\[serve\]'", readme)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named = set(re.findall(r"`\[(\w+)\]`|\.whl\[(\w+)\]|'\.\[(\w+)\]'", readme))
    for extra in {name for group in named for name in group if name}:
        assert extra in extras["optional-dependencies"], extra


def test_the_readme_config_file_example_loads(tmp_path):
    """The README's TOML example, with the command line its comment gives."""
    from tf_alexnet import config

    (block,) = re.findall(r"^```toml\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    command = re.search(r"->\s+tf-alexnet train (.*)$", block, re.M).group(1).split()
    assert command == ["--preset", "cpu", "--config", "my-run.toml", "--epochs", "20"]
    (tmp_path / "my-run.toml").write_text(block)
    resolved = config.resolve("cpu", tmp_path / "my-run.toml", {"epochs": 20})
    assert (resolved.variant, resolved.image_size, resolved.epochs) == ("mini", 32, 20)
    assert (resolved.schedule, resolved.augment.crop) == ("cosine", "pad")
