"""The package's long description: README.md with links that work where it is read.

Everything else is declared in pyproject.toml. README.md links to the repository's files
relatively (docs/docker.md, #benchmarks), which GitHub resolves and PyPI, where the README is
the project page, does not. Here each relative link becomes absolute under the `Source` URL of
`[project.urls]` (`<Source>/blob/main/<path>`, `<Source>#<anchor>`), or, with no `Source`
declared, plain text that still names the file, so the page never has a dead link.
"""

import pathlib
import re
import tomllib

HERE = pathlib.Path(__file__).resolve().parent

LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(([^()\s]+)\)")
"""A Markdown link, `[text](target)` (its text may hold one level of brackets), not an image."""

ABSOLUTE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
"""A target with a scheme (`https:`, `mailto:`) or a network path: it works anywhere."""

FENCE = re.compile(r"^( *```.*?^ *```)", re.MULTILINE | re.DOTALL)
"""A fenced code block (in a list item too): brackets in it are code, not links."""


def relative_links(markdown: str) -> list[str]:
    """The targets of the relative links in `markdown`, outside code blocks."""
    prose = FENCE.sub("", markdown)
    return [m.group(2) for m in LINK.finditer(prose) if not ABSOLUTE.match(m.group(2))]


def pypi_readme(markdown: str, source: str | None) -> str:
    """`markdown` with its relative links made absolute under `source` (a repository's web
    address on GitHub), or turned into text naming their file when `source` is None."""

    def link(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        if ABSOLUTE.match(target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        if source:
            base = source.rstrip("/")
            url = f"{base}/blob/main/{path}" if path else base
            return f"[{text}]({url}{'#' + anchor if anchor else ''})"
        if not path or text.strip("`") == path:  # a section of this page, or the path itself
            return text
        return f"{text} (`{path}`)"

    parts = FENCE.split(markdown)  # odd indices are code blocks, left as written
    return "".join(part if i % 2 else LINK.sub(link, part) for i, part in enumerate(parts))


def source_url(pyproject: dict) -> str | None:
    """The `Source` entry of `[project.urls]`, if the project declares one."""
    urls = pyproject.get("project", {}).get("urls", {})
    return next((url for name, url in urls.items() if name.lower() == "source"), None)


if __name__ == "__main__":
    from setuptools import setup

    pyproject = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    setup(
        long_description=pypi_readme(readme, source_url(pyproject)),
        long_description_content_type="text/markdown",
    )
