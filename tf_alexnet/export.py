"""SavedModel export for TF Serving: signatures, validation, warmup data, atomic publish.

`export` writes `BASE/NAME/<version>/` that `tensorflow/serving` loads unchanged:

- `serving_default`: a batch of encoded images (JPEG, PNG, GIF, BMP, WebP; any size; gray, RGB
  or RGBA) decoded, converted, resized and scaled in the graph exactly as in training.
- `serving_pixels`: float pixels already at the model's input size, in [0, 1].

Both answer per image: probabilities, class id, class name and the top-k ids and scores.
The version folder is built under a non-integer temporary name (TF Serving ignores those),
validated, synced to the disk, then renamed: a crash (a power loss too) leaves no partial
version and never touches another one, and the next export deletes the temporary folder a
killed one left (from any container that shares the folder: each export holds a lock beside its
temporary folder while it builds it). The sample images are checked first (they decode; the
model's outputs on them are finite), so a refused export writes nothing.
The folder's layout, and reading it back, belong to `tf_alexnet.exported`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import os
import pathlib
import re
import shutil
import socket
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.exported import (
    METADATA_FILE,
    WARMUP_FILE,
    ExportedModel,
    load_exported,
    next_version,
    saved_model_path,
)
from tf_alexnet.files import locked_by_another, sync, sync_tree, writing
from tf_alexnet.hardware import without_bf16_rewrite
from tf_alexnet.model import check_classifier, has_test_time_flip, outputs_probabilities
from tf_alexnet.predictions import to_probabilities, trained_class_names, unnamed_classes
from tf_alexnet.preprocess import encoded_batch, preprocess
from tf_alexnet.run_dir import resolve_source
from tf_alexnet.saving import load_model, process_running

# Re-exported: export.py is where callers have found these.
__all__ = [
    "METADATA_FILE",
    "WARMUP_FILE",
    "ExportMismatch",
    "ExportResult",
    "build_archive",
    "export",
    "load_exported",
    "next_version",
    "resolve_source",
    "saved_model_path",
    "validate",
    "warmup_records",
]

MAX_ABS_DIFFERENCE = 1e-5
"""Export vs the float32 Keras model it was built from: the same graph, float32 rounding, for
logits up to `LOGIT_SCALE` in size (`logit_scale` grows it with larger ones)."""
LOGIT_SCALE = 5.0
"""Float32 rounds a logit to about 6e-8 of its size, so two classes near a tie move by an amount
that grows with the logits: past this size, the tolerance grows in proportion. A model whose
training diverged (logits of 52 on its samples) exported 1.01e-5 apart, about 3 roundings, and
could not be published; wrong weights still differ by about the probabilities themselves. The
tolerances against the model as trained grow alike: bf16 rounds a logit to about 4e-3 of its
size, and a bf16 run with logits of 52 was 0.27 from its float32 copy."""
TRAINING_PRECISION_TOLERANCE = {
    "float32": MAX_ABS_DIFFERENCE,
    "mixed_bfloat16": 5e-2,
    "mixed_float16": 1e-2,
}
"""Export vs the model as trained, by its dtype policy: bf16 keeps 8 bits of mantissa, so its
probabilities differ from float32 ones by up to ~1e-2 (a tolerance that still catches wrong
weights, whose differences are of the order of the probabilities themselves), for logits up to
`LOGIT_SCALE` in size (`logit_scale`)."""


class ExportMismatch(RuntimeError):
    """The exported SavedModel does not answer as the Keras model: nothing was published."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: pathlib.Path
    version: int
    max_abs_difference: float
    training_policy: str = "float32"
    training_max_abs_difference: float = 0.0


def build_archive(model: keras.Model, class_names: Sequence[str]) -> keras.export.ExportArchive:
    """The two serving signatures over `model` (variables tracked once, by the endpoints)."""
    from tf_alexnet.sources import decode_checked  # a colour-palette BMP: refused, not gray

    height, width, channels = model.input_shape[1:]
    top_k = min(contract.TOP_K, len(class_names))
    names = tf.constant(list(class_names))

    def answer(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # In the graph, so TF Serving answers the same as `predictions.decode_predictions`.
        logits = tf.cast(model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits) if not outputs_probabilities(model) else logits
        top = tf.math.top_k(probabilities, k=top_k)
        class_id = tf.argmax(probabilities, axis=-1)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_CLASS_ID: class_id,
            contract.OUTPUT_CLASS_NAME: tf.gather(names, class_id),
            contract.OUTPUT_TOP_K_IDS: top.indices,
            contract.OUTPUT_TOP_K_SCORES: top.values,
        }

    def from_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(
            lambda encoded: preprocess(
                decode_checked(encoded, channels), (height, width), channels
            ),
            image_bytes,
            fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32),
        )
        return answer(images)

    def from_pixels(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return answer(images)

    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        contract.SIGNATURE_IMAGE_BYTES,
        from_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_IMAGE_BYTES)],
    )
    archive.add_endpoint(
        contract.SIGNATURE_IMAGE_TENSOR,
        from_pixels,
        input_signature=[
            tf.TensorSpec(
                [None, height, width, channels], tf.float32, name=contract.INPUT_IMAGE_TENSOR
            )
        ],
    )
    return archive


def warmup_records(name: str, encoded_images: Sequence[bytes]) -> list[bytes]:
    """Serialized `PredictionLog`s calling the bytes signature (one image, then all)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for batch in ([encoded_images[0]], list(encoded_images)):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=name, signature_name=contract.SIGNATURE_IMAGE_BYTES)
        )
        request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
            tf.make_tensor_proto(batch, dtype=tf.string)
        )
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def float32_model(model: keras.Model) -> keras.Model:
    """`model` computing in float32: the same layers and weights under the float32 policy.

    A model trained under `mixed_bfloat16` or `mixed_float16` keeps float32 variables but
    computes in 16 bits. Exports store the float32 graph: it runs at full speed on every CPU
    (bf16 is emulated, hence slow, on CPUs without bf16 units) and on every TF Serving build;
    where bf16 units exist, TensorFlow's `auto_mixed_precision_onednn_bfloat16` graph rewrite
    brings the 16-bit speed back at serving time (see `tf_alexnet.hardware`).
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def in_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=in_float32)
    copy.set_weights(model.get_weights())
    return copy


def training_policy(model: keras.Model) -> str:
    """The dtype policy `model` computes in ("float32", "mixed_bfloat16", ...)."""
    names = {layer.dtype_policy.name for layer in model.layers} - {"float32"}
    return names.pop() if len(names) == 1 else "float32" if not names else "mixed"


def sample_outputs(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """The model's outputs on the sample images' `pixels`, in float64: what an export checks,
    scales its tolerances by and validates against (the model is run once for all three)."""
    return np.asarray(model(pixels, training=False), np.float64)


def validate(
    saved_model_dir: pathlib.Path,
    model: keras.Model,
    encoded_images: Sequence[bytes],
    pixels: np.ndarray,
    outputs: np.ndarray,
) -> float:
    """Max |probability difference| between the SavedModel's two signatures and Keras, whose
    `outputs` on the images (their `pixels` decoded, `sample_outputs`) are given."""
    expected = to_probabilities(outputs, from_logits=not outputs_probabilities(model))
    with without_bf16_rewrite():  # a process that serves in bf16 still checks in float32
        loaded = tf.saved_model.load(str(saved_model_dir))
        from_bytes = loaded.signatures[contract.SIGNATURE_IMAGE_BYTES](
            **{contract.INPUT_IMAGE_BYTES: tf.constant(list(encoded_images))}
        )
        from_pixels = loaded.signatures[contract.SIGNATURE_IMAGE_TENSOR](
            **{contract.INPUT_IMAGE_TENSOR: pixels}
        )
    # NaN where either side is not finite: `difference > tolerance` is then False, so callers
    # check `not difference <= tolerance`.
    return float(
        np.max(
            [
                np.abs(outputs[contract.OUTPUT_PROBABILITIES].numpy() - expected).max()
                for outputs in (from_bytes, from_pixels)
            ]
        )
    )


def logit_scale(model: keras.Model, outputs: np.ndarray) -> float:
    """How much the tolerances grow for this model: 1, or its largest logit on the sample
    images (`outputs`, from `sample_outputs`) over `LOGIT_SCALE` when larger (1 for a model
    that outputs probabilities: its logits are not known)."""
    if outputs_probabilities(model):
        return 1.0
    largest = float(np.max(np.abs(outputs)))
    if not np.isfinite(largest):  # `check_samples` refuses such a model before this
        return 1.0
    return max(1.0, largest / LOGIT_SCALE)


def check_samples(
    model: keras.Model, encoded_images: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """Refuses sample images that do not decode, and a model whose outputs on them are not
    finite (a diverged training), before anything is written; returns the images' pixels
    and the outputs."""
    from tf_alexnet.sources import image_problem

    for index, data in enumerate(encoded_images, start=1):
        if problem := image_problem(data):
            raise UserError(f"Sample image {index} of {len(encoded_images)} is {problem}.")
    pixels = encoded_batch(encoded_images, model.input_shape[1:])
    outputs = sample_outputs(model, pixels)
    if not np.isfinite(outputs).all():
        raise UserError(
            "The model's outputs are not finite (NaN/inf): the training diverged; train it "
            "again with a lower learning rate (--learning-rate) or a longer warm-up "
            "(--warmup-epochs). Nothing was exported."
        )
    return pixels, outputs


TEMP_PREFIX = ".tmp-"
"""An export builds `<model>/.tmp-<version>-<pid>@<host>/`, then renames it to `<version>`."""
_TEMP_NAME = re.compile(r"\.tmp-\d+-(?P<pid>\d+)(?:@(?P<host>.+))?")


def temp_name(version: int) -> str:
    """The temporary folder name of this process's export of `version`: TF Serving ignores it
    (not an integer); the pid and host tell a later export whether its builder still runs."""
    return f"{TEMP_PREFIX}{version}-{os.getpid()}@{socket.gethostname()}"


LOCK_SUFFIX = ".lock"
"""`<temporary folder>.lock`: locked (`flock`) by the export building that folder, for as long
as it runs. The kernel drops the lock when the process dies, however it dies."""


def _lock_file(temp: pathlib.Path) -> pathlib.Path:
    return temp.with_name(temp.name + LOCK_SUFFIX)


def hold_export_lock(temp: pathlib.Path) -> int:
    """Locks `temp`'s lock file for this process; returns the descriptor for
    `release_export_lock`. Take it before `temp` exists, let it go after `temp` is gone."""
    descriptor = os.open(_lock_file(temp), os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def release_export_lock(temp: pathlib.Path, descriptor: int) -> None:
    with contextlib.suppress(OSError):
        _lock_file(temp).unlink()
    os.close(descriptor)


def _writer_gone(lock: pathlib.Path) -> bool | None:
    """Whether the export that locked `lock` has ended (nobody holds the lock); None when there
    is no lock file."""
    held = locked_by_another(lock)
    return None if held is None else not held


def remove_stale_temps(model_dir: pathlib.Path) -> list[pathlib.Path]:
    """Deletes the temporary folders of killed exports in `model_dir`; returns them.

    A folder is stale when nobody holds its lock file (`LOCK_SUFFIX`): whatever host or
    container built it, as a volume shared by containers is on one kernel, which drops a dead
    process's locks. A folder without a lock file (from earlier versions) is stale when it was
    built on this host (by name; names without a host count as this host's) by a process that
    no longer runs; another host's is left alone (a container has its own pids). Lock files
    whose folder is gone (an export killed just after its publish) are deleted too.
    """
    removed = []
    host = socket.gethostname()
    for path in sorted(model_dir.glob(TEMP_PREFIX + "*")):
        match = _TEMP_NAME.fullmatch(path.name)
        if path.name.endswith(LOCK_SUFFIX) or not match:
            continue
        gone = _writer_gone(_lock_file(path))
        if gone is None:  # no lock: tell by host and pid
            gone = (match["host"] or host) == host and not process_running(int(match["pid"]))
        if gone:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                _lock_file(path).unlink()
            removed.append(path)
    for lock in model_dir.glob(TEMP_PREFIX + "*" + LOCK_SUFFIX):
        folder = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
        if not folder.exists() and _writer_gone(lock):
            with contextlib.suppress(OSError):
                lock.unlink()
    return removed


def _missing_folders(path: pathlib.Path) -> list[pathlib.Path]:
    """`path` and its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _publish(temp: pathlib.Path, final: pathlib.Path) -> bool:
    """Renames `temp` to `final` (atomic on one filesystem); False if `final` exists.

    Durable too: `temp`'s files and folders reach the disk before the rename, and the rename
    after it, so a power loss leaves the version either absent or whole (the rename alone can
    reach the disk before the files' data: TF Serving would find them empty or cut short).
    """
    sync_tree(temp)
    try:
        os.rename(temp, final)
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    sync(final.parent)
    return True


def _next_version(model_dir: pathlib.Path) -> int:
    """`next_version`, refused past `contract.MAX_VERSION` (a folder TF Serving would not see)."""
    version = next_version(model_dir)
    if version > contract.MAX_VERSION:
        raise UserError(
            f"The next version in {str(model_dir)!r} would be {version}, beyond TF Serving's "
            "highest, 2**63-1 (it reads versions as int64). Pass --version with a free number "
            "below it."
        )
    return version


def export(
    source: str | os.PathLike[str],
    base_path: str | os.PathLike[str] = "models",
    name: str = contract.MODEL_NAME,
    version: int | None = None,
    *,
    sample_images: Sequence[bytes],
    class_names: Sequence[str] | None = None,
    before_publish: Callable[[pathlib.Path], None] | None = None,
) -> ExportResult:
    """Exports a run's best model (or a `.keras` file) to `base_path/name/<version>/`.

    Args:
        source: a run directory or a `.keras` file.
        base_path: TF Serving's `MODEL_BASE_PATH`.
        name: TF Serving's `MODEL_NAME`.
        version: the version folder; default: the next integer.
        sample_images: a few real encoded images, for validation and warmup requests.
        class_names: default: the run's (also for a `.keras` file in a run directory, as
            `predict` finds them), else Fashion-MNIST's for 10 classes, else `class_0`, ...
        before_publish: called with the finished temporary folder just before the rename
            (tests use it to fail an export midway).
    """
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"Invalid model name {name!r}.")
    if version is not None and not 1 <= version <= contract.MAX_VERSION:
        raise UserError(
            "`version` should be an integer from 1 to 2**63-1 (TF Serving reads versions as "
            f"int64). Received: {version}"
        )
    if not sample_images:
        raise UserError("Export needs at least one sample image for validation and warmup.")
    model_path, metrics = resolve_source(source)
    trained = load_model(model_path, compile=False)
    check_classifier(trained, model_path)  # before anything is written
    policy = training_policy(trained)
    model = float32_model(trained)
    classes = model.output_shape[-1]
    if not class_names and not (class_names := trained_class_names(model_path, classes)):
        class_names = contract.default_class_names(classes)  # a `.keras` file out of its run
        remedy = (
            "Pass --image-folder or --dataset (the data it was trained on) to name them, or "
            "export the model from its run directory."
        )
        print(f"Note: {unnamed_classes(model_path, class_names, remedy)}", flush=True)
    class_names = list(class_names)
    if len(class_names) != classes:
        raise UserError(f"The model has {classes} classes but {len(class_names)} class names.")
    pixels, outputs = check_samples(model, sample_images)

    model_dir = pathlib.Path(base_path) / name
    numbered = version is None  # the next free number, even if another export takes this one
    if version is None:
        version = _next_version(model_dir)
    final = model_dir / str(version)
    if final.exists():
        raise UserError(f"{str(final)!r} exists: published versions are never overwritten.")
    created = _missing_folders(model_dir)  # removed again if the export fails
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(model_dir)
    temp = model_dir / temp_name(version)
    lock = hold_export_lock(temp)
    shutil.rmtree(temp, ignore_errors=True)
    try:
        build_archive(model, class_names).write_out(str(temp), verbose=False)
        folder = ExportedModel(temp)
        folder.write_class_names(class_names)
        folder.extra.mkdir(exist_ok=True)
        with tf.io.TFRecordWriter(str(folder.warmup_file)) as writer:
            for record in warmup_records(name, sample_images):
                writer.write(record)
        difference = validate(temp, model, sample_images, pixels, outputs)
        scale = logit_scale(model, outputs)
        allowed = MAX_ABS_DIFFERENCE * scale
        if not difference <= allowed:  # NaN fails too
            raise ExportMismatch(
                f"The SavedModel disagrees with the Keras model: max |difference| {difference:.2e}"
                f" > {allowed:.2g}. Nothing was published."
            )
        trained_difference = (
            difference
            if trained is model
            else validate(temp, trained, sample_images, pixels, sample_outputs(trained, pixels))
        )
        tolerance = scale * TRAINING_PRECISION_TOLERANCE.get(
            policy, max(TRAINING_PRECISION_TOLERANCE.values())
        )
        if not trained_difference <= tolerance:
            raise ExportMismatch(
                f"The SavedModel disagrees with the model as trained ({policy}): max |difference|"
                f" {trained_difference:.2e} > {tolerance:.2g}. Nothing was published."
            )
        metadata = {
            "model_name": name,
            "version": version,
            "source": str(model_path),
            "input_shape": list(model.input_shape[1:]),
            "class_names": class_names,
            "signatures": [contract.SIGNATURE_IMAGE_BYTES, contract.SIGNATURE_IMAGE_TENSOR],
            "test_time_flip": has_test_time_flip(model),  # twice the compute per image
            "training_metrics": metrics,
            "validation_max_abs_difference": difference,
            "precision": {
                "stored": "float32",
                "trained": policy,
                "max_abs_difference_to_trained": trained_difference,
            },
            "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        }
        folder.write_metadata(metadata)
        if before_publish is not None:
            before_publish(temp)
        while not _publish(temp, final):  # another export published `final` meanwhile
            if not numbered:
                raise UserError(
                    f"{str(final)!r} appeared while exporting: published versions are never "
                    "overwritten. Nothing was published."
                )
            version = _next_version(model_dir)
            final = model_dir / str(version)
            folder.write_metadata({**metadata, "version": version})
        for made in created:  # the folders made for it: their names in their parents too
            sync(made.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        release_export_lock(temp, lock)
        for made in created:  # the folders made for this export, if nothing else is there
            with contextlib.suppress(OSError):
                made.rmdir()
        with writing(model_dir):  # a write refused at its close (metadata.json) names no file
            raise
    release_export_lock(temp, lock)
    return ExportResult(final, version, difference, policy, trained_difference)
