"""The package version, in one place (pyproject.toml reads it; so does `tf-alexnet --version`)."""

__version__ = "0.1.0"
