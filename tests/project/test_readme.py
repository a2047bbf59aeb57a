"""The README's Python examples run as written, on a model trained by the test suite."""

import re
import shutil
import subprocess
import sys

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
