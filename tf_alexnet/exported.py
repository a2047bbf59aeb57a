"""The exported model: the version-folder layout TF Serving reads, and how to read it back.

```
BASE/NAME/<version>/                  an integer-named folder (TF Serving ignores the others)
    saved_model.pb, variables/
    assets/class_names.txt            one class name per line, index = class id
    assets.extra/metadata.json        what export recorded (input shape, metrics, versions)
    assets.extra/tf_serving_warmup_requests
```

`export.py` writes this layout; prediction, evaluation and every serving backend read it
through this module. The layout part is pure Python (the facade's REST backend runs without
TensorFlow); only `ExportedModel.signature`, `ExportedModel.check_bytes_signature` and
`load_exported` import TensorFlow, when called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

from tf_alexnet import contract
from tf_alexnet.errors import UserError

SAVED_MODEL_FILE = "saved_model.pb"
ASSETS_DIR = "assets"
EXTRA_DIR = "assets.extra"
"""TF Serving copies nothing from here into the graph; it reads the warmup file."""
METADATA_FILE = "metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def is_version_name(name: str) -> bool:
    """Whether TF Serving would load a folder of this name: ASCII digits only."""
    return name.isascii() and name.isdigit()


def version_numbers(model_dir: str | os.PathLike[str]) -> list[int]:
    """The published versions in `BASE/NAME` (integer-named folders with a SavedModel), sorted."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if is_version_name(p.name) and (p / SAVED_MODEL_FILE).is_file()
    )


def next_version(model_dir: str | os.PathLike[str]) -> int:
    """1 + the highest integer name in `model_dir`, finished version or not (1 if none)."""
    model_dir = pathlib.Path(model_dir)
    names = [p.name for p in model_dir.iterdir()] if model_dir.is_dir() else []
    return max((int(n) for n in names if is_version_name(n)), default=0) + 1


def saved_model_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """A version folder as given, or the highest version in a model folder."""
    path = pathlib.Path(path)
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    versions = version_numbers(path)
    if not versions:
        raise UserError(f"No exported SavedModel at {str(path)!r}.{models_hint(path)}")
    return path / str(versions[-1])


def model_names(base_path: str | os.PathLike[str]) -> list[str]:
    """The models in a base path (TF Serving's MODEL_BASE_PATH): folders with a version."""
    base_path = pathlib.Path(base_path)
    if not base_path.is_dir():
        return []
    return sorted(p.name for p in base_path.iterdir() if version_numbers(p))


def models_hint(path: pathlib.Path) -> str:
    """When `path` is a base path rather than a model folder, which models it holds."""
    models = model_names(path)
    if not models:
        return ""
    return f" It holds models ({', '.join(models)}): give one, e.g. {str(path / models[0])!r}."


def version_folder(model_dir: str | os.PathLike[str], version: int | None = None) -> pathlib.Path:
    """`BASE/NAME/<version>`, or the highest one when `version` is None (UserError if absent)."""
    model_dir = pathlib.Path(model_dir)
    if version is None:
        return saved_model_path(model_dir)
    folder = model_dir / str(version)
    if not (folder / SAVED_MODEL_FILE).is_file():
        raise UserError(f"No exported version {version} in {str(model_dir)!r}.")
    return folder


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """One version folder: its files, class names, metadata and signatures.

    Also used by the writer on its temporary folder, so both sides name the same files.
    """

    path: pathlib.Path

    @classmethod
    def find(cls, path: str | os.PathLike[str], version: int | None = None) -> ExportedModel:
        """A version folder, or a model folder's `version` (default: its highest)."""
        path = pathlib.Path(path)
        if version is None:
            return cls(saved_model_path(path))
        return cls(version_folder(path, version))

    @property
    def version(self) -> int:
        if not is_version_name(self.path.name):
            raise UserError(f"{str(self.path)!r} is not a version folder (not an integer name).")
        return int(self.path.name)

    @property
    def saved_model_file(self) -> pathlib.Path:
        return self.path / SAVED_MODEL_FILE

    @property
    def assets(self) -> pathlib.Path:
        return self.path / ASSETS_DIR

    @property
    def extra(self) -> pathlib.Path:
        return self.path / EXTRA_DIR

    @property
    def class_names_file(self) -> pathlib.Path:
        return self.assets / contract.CLASS_NAMES_ASSET

    @property
    def metadata_file(self) -> pathlib.Path:
        return self.extra / METADATA_FILE

    @property
    def warmup_file(self) -> pathlib.Path:
        return self.extra / WARMUP_FILE

    def class_names(self) -> tuple[str, ...]:
        """The names export wrote beside the model, index = class id."""
        if not self.class_names_file.is_file():
            raise UserError(f"The exported model {str(self.path)!r} has no class names asset.")
        return tuple(self.class_names_file.read_text(encoding="utf-8").splitlines())

    def metadata(self) -> dict[str, Any]:
        """What export recorded (empty when the folder has no metadata file)."""
        if not self.metadata_file.is_file():
            return {}
        values: dict[str, Any] = json.loads(self.metadata_file.read_text(encoding="utf-8"))
        return values

    def write_class_names(self, class_names: list[str]) -> None:
        text = "\n".join(class_names) + "\n"
        if text.splitlines() != list(class_names):  # it would read back as other names
            broken = next(name for name in class_names if len(f"{name}.".splitlines()) > 1)
            raise UserError(
                "Each class name should be one line of the export's class names, without line "
                f"breaks. Received: a class named {broken!r}"
            )
        self.assets.mkdir(parents=True, exist_ok=True)
        self.class_names_file.write_text(text, encoding="utf-8")

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        self.extra.mkdir(parents=True, exist_ok=True)
        self.metadata_file.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")

    def check_bytes_signature(self) -> None:
        """UserError unless the SavedModel's bytes signature takes encoded images and gives
        probabilities, as `tf-alexnet export` writes it. Read from `saved_model.pb` alone, without
        the variables, so that `serve` refuses another model in a second, before it starts."""
        from google.protobuf.message import DecodeError
        from tensorflow.core.protobuf import saved_model_pb2

        saved = saved_model_pb2.SavedModel()
        try:
            saved.ParseFromString(self.saved_model_file.read_bytes())
        except DecodeError:
            raise UserError(
                f"{str(self.saved_model_file)!r} is not a SavedModel (it does not parse)."
            ) from None
        name = contract.SIGNATURE_IMAGE_BYTES
        found = [
            graph.signature_def[name] for graph in saved.meta_graphs if name in graph.signature_def
        ]
        inputs = sorted(found[0].inputs) if found else []
        outputs = sorted(found[0].outputs) if found else []
        if contract.INPUT_IMAGE_BYTES in inputs and contract.OUTPUT_PROBABILITIES in outputs:
            return
        has = (
            f"its {name!r} signature takes {_listed(inputs)} and gives {_listed(outputs)}"
            if found
            else f"it has no {name!r} signature"
        )
        raise UserError(
            f"{str(self.path)!r} is not a tf-alexnet export: {has}, where an export takes "
            f"{contract.INPUT_IMAGE_BYTES!r} and gives {contract.OUTPUT_PROBABILITIES!r}. Export "
            "the model with `tf-alexnet export`."
        )

    def signature(self, name: str = contract.SIGNATURE_IMAGE_BYTES) -> Any:
        """A signature of the SavedModel as a TF function (imports TensorFlow); the bytes
        signature is checked to be an export's first."""
        import tensorflow as tf

        if name == contract.SIGNATURE_IMAGE_BYTES:
            self.check_bytes_signature()
        try:
            signatures = tf.saved_model.load(str(self.path)).signatures
        except Exception as err:  # a truncated variables file: IndexError, DataLossError...
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise UserError(
                f"The exported model {str(self.path)!r} does not load (damaged, or still being "
                f"copied?): {reason}"
            ) from None
        if name not in signatures:
            raise UserError(
                f"The exported model {str(self.path)!r} has no signature {name!r} "
                f"(it has {', '.join(sorted(signatures))}). Received: signature={name!r}"
            )
        signature: Callable[..., Any] = signatures[name]
        return signature


def _listed(names: list[str]) -> str:
    return ", ".join(map(repr, names)) if names else "nothing"


def load_exported(path: str | os.PathLike[str]) -> Any:
    """The exported pixels signature as a Keras layer, usable inside another Keras model.

    Args:
        path: a version folder (`BASE/NAME/<version>`) or a model folder (`BASE/NAME`,
            whose highest version is used).

    Returns:
        A `keras.layers.TFSMLayer` (`tf_alexnet.layers.ExportedPixels`) mapping a batch of
        float32 pixels in [0, 1], of the model's input shape, to the output dict; other
        images (uint8 pixels, another size or channel count) raise a `ValueError` that names
        the dtype and shape expected and those received.

    Raises:
        ValueError: `path` is no tf_alexnet export. One written by Keras's `model.export()`
            loads with `keras.layers.TFSMLayer(path, call_endpoint="serve")`.
    """
    import keras

    if not isinstance(path, str | os.PathLike):
        raise UserError(
            f"`load_exported` expects the path of an exported model folder. Received: path={path!r}"
        )
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "`load_exported` wraps a SavedModel, which runs on TensorFlow only: use Keras's "
            "TensorFlow backend (KERAS_BACKEND=tensorflow), or load the `.keras` model with "
            f"`tf_alexnet.load_model`. Received: Keras backend {keras.backend.backend()!r}"
        )
    from tf_alexnet.layers import ExportedPixels

    try:
        folder = saved_model_path(path)
    except UserError as err:
        raise UserError(f"{err}{_keras_model_hint(pathlib.Path(path))}") from None
    endpoint = contract.SIGNATURE_IMAGE_TENSOR
    try:
        return ExportedPixels(str(folder), call_endpoint=endpoint)
    except ValueError as err:
        if f"'{endpoint}'" not in str(err):  # Keras's words for a missing endpoint
            raise
        raise UserError(
            "`load_exported` expects a SavedModel written by `tf-alexnet export` (or "
            f"`tf_alexnet.export.export`), which has a {endpoint!r} signature, and this one has "
            "none. A SavedModel written by Keras's `model.export()` loads with "
            f'`keras.layers.TFSMLayer(path, call_endpoint="serve")`. Received: path={str(path)!r}'
        ) from None


def _keras_model_hint(path: pathlib.Path) -> str:
    """What loads `path` when it is a `.keras` file or a training run rather than an export."""
    export = "or export it first (`tf-alexnet export`)."
    if path.is_file() and path.suffix == ".keras":
        return f" It is a Keras model file: load it with `tf_alexnet.load_model`, {export}"
    for name in (contract.RUN_BEST_MODEL, contract.RUN_FINAL_MODEL):
        if (path / name).is_file():
            return (
                " It is a training run: load its model with "
                f"`tf_alexnet.load_model({str(path / name)!r})`, {export}"
            )
    return ""
