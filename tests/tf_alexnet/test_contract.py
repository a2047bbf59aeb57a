import subprocess
import sys

from tests.conftest import REPO
from tf_alexnet import contract


def test_contract_imports_without_tensorflow():
    path = str(REPO / "tf_alexnet" / "contract.py")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('c', {path!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "print(module.MODEL_NAME, module.NUM_CLASSES)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["alexnet", "10"]


def test_class_names_match_fashion_mnist():
    assert contract.NUM_CLASSES == len(contract.CLASS_NAMES) == 10
    assert contract.CLASS_NAMES[0] == "T-shirt/top"
    assert contract.CLASS_NAMES[9] == "Ankle boot"


def test_signature_and_tensor_keys_are_distinct():
    outputs = [
        contract.OUTPUT_PROBABILITIES,
        contract.OUTPUT_CLASS_ID,
        contract.OUTPUT_CLASS_NAME,
        contract.OUTPUT_TOP_K_IDS,
        contract.OUTPUT_TOP_K_SCORES,
    ]
    assert len(set(outputs)) == len(outputs)
    assert contract.SIGNATURE_IMAGE_BYTES == "serving_default"
    assert contract.SIGNATURE_IMAGE_BYTES != contract.SIGNATURE_IMAGE_TENSOR
    assert contract.INPUT_IMAGE_BYTES != contract.INPUT_IMAGE_TENSOR
