"""TF Serving's JSON tensors (`tensorflow_serving/util/json_tensor.cc`), read and written.

Requests: `instances` (row format, also objects keyed by input name) or `inputs` (columnar),
`{"b64": ...}` values for string inputs, each value typed by the signature's input. Answers:
`predictions` or `outputs`, floats as the shortest of `%g` and 9 (float) or 17 (double)
significant digits that reads back exactly, whole numbers with `.0`, NaN/Infinity as words.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import numpy as np
import tensorflow as tf


class ServingError(Exception):
    """A TF Serving error status: canonical code name (`NOT_FOUND`, ...) and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:  # as absl::Status prints itself
        return f"{self.code}: {self.message}"


def json_text(value: Any) -> str:
    return json.dumps(value, indent=4)


def parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise ServingError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except RecursionError as err:  # arrays nested deeper than Python's parser recurses: a 500
        raise ServingError(
            "INVALID_ARGUMENT", "JSON Parse error: The document is nested too deeply"
        ) from err
    except ValueError as err:
        offset = getattr(err, "pos", 0)
        raise ServingError(
            "INVALID_ARGUMENT", f"JSON Parse error: {getattr(err, 'msg', err)} at offset: {offset}"
        ) from err
    if not isinstance(document, dict):
        raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json_text(document)} Is not object")
    return document


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _b64decode(text: str) -> bytes:
    """absl::Base64Unescape: the standard alphabet, padding optional, whitespace skipped."""
    data = re.sub(r"[ \t\n\v\f\r]", "", text)
    stripped = data.rstrip("=")
    if (
        not re.fullmatch(r"[A-Za-z0-9+/]*", stripped)
        or len(stripped) % 4 == 1
        or (stripped != data and (len(data) % 4 or len(data) - len(stripped) > 2))
    ):
        raise ServingError("INVALID_ARGUMENT", "Unable to base64 decode")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4))
    except binascii.Error as err:
        raise ServingError("INVALID_ARGUMENT", "Unable to base64 decode") from err


def _type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    for kind, name in ((dict, "Object"), (list, "Array"), (str, "String")):
        if isinstance(value, kind):
            return name
    return "Number"


def _leaf(value: Any, dtype: tf.DType) -> Any:
    """One JSON value as a value of the signature's input type (AddValueToTensor)."""
    if dtype == tf.string:
        if isinstance(value, dict):
            if not _is_b64(value):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"JSON Value: {json_text(value)} not formatted correctly for base64 data",
                )
            return _b64decode(value["b64"])
        if isinstance(value, str):
            return value.encode("utf-8")
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    elif dtype.is_floating:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            single = dtype == tf.float32
            if (isinstance(value, int) and abs(value) > 2 ** (24 if single else 53) - 1) or (
                math.isfinite(value) and abs(value) > np.finfo(dtype.as_numpy_dtype).max
            ):  # IsLosslessDecimal()
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Cannot convert JSON value: {value} to {'float' if single else 'double'} "
                    "without loss of precision.",
                )
            return value
    elif dtype.is_integer:
        limits = np.iinfo(dtype.as_numpy_dtype)
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and limits.min <= value <= limits.max
        ):
            return value
    raise ServingError(
        "INVALID_ARGUMENT",
        f"JSON Value: {json_text(value)} Type: {_type_name(value)} is not of expected type: "
        f"{dtype.name}",
    )


def _tensor(value: Any, dtype: tf.DType) -> np.ndarray:
    """A (nested) JSON value as a dense array; lists must be regular (FillTensorProto)."""

    def shape(item: Any) -> list[int]:
        return [len(item), *(shape(item[0]) if item else [])] if isinstance(item, list) else []

    def fill(item: Any, level: int, dims: list[int]) -> Any:
        if not isinstance(item, list):
            if level != len(dims):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"JSON Value: {json_text(item)} found at incorrect level: {level + 1} in the "
                    f"JSON DOM. Expected at level: {len(dims)}",
                )
            return _leaf(item, dtype)
        if level >= len(dims):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Encountered list at unexpected level: {level} expected < {len(dims)}",
            )
        if len(item) != dims[level]:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {dims[level]}",
            )
        return [fill(element, level + 1, dims) for element in item]

    dims = shape(value)
    filled = fill(value, 0, dims)
    return np.array(filled, dtype=object if dtype == tf.string else dtype.as_numpy_dtype).reshape(
        dims
    )


def row_inputs(document: dict[str, Any], dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: plain values for one input, or objects keyed by name."""
    instances = document["instances"]
    if not isinstance(instances, list):
        raise ServingError(
            "INVALID_ARGUMENT",
            f"JSON Value: {json_text(document)} Excepting 'instances' to be an list/array",
        )
    if not instances:
        raise ServingError(
            "INVALID_ARGUMENT", f"JSON Value: {json_text(document)} No values in 'instances' array"
        )
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise ServingError(
            "INVALID_ARGUMENT",
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        )
    named = _is_named(instances[0])
    columns: dict[str, list[np.ndarray]] = {}

    def add(index: int, key: str, value: Any, where: str) -> None:
        try:
            if key not in dtypes:
                raise ServingError(
                    "INVALID_ARGUMENT", f"JSON object: does not have named input: {key}"
                )
            array = _tensor(value, dtypes[key])
            if columns.get(key) and columns[key][0].shape != array.shape:
                first = columns[key][0]
                if first.size != array.size:
                    raise ServingError(
                        "INVALID_ARGUMENT",
                        f"Expecting tensor size: {first.size} but got: {array.size}",
                    )
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expecting shape {_shape_text(first.shape)} but got: "
                    f"{_shape_text(array.shape)}",
                )
        except ServingError as err:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Failed to process element: {index}{where} of 'instances' list. Error: {err}",
            ) from err
        columns.setdefault(key, []).append(array)

    for index, instance in enumerate(instances):
        if named:
            if not _is_named(instance):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expecting object but got list at item {index} of input list",
                )
            for key, value in instance.items():
                add(index, key, value, f" key: {key}")
            if set(instance) != set(dtypes):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_text(instance)} must only have keys: {','.join(sorted(dtypes))}",
                )
        else:
            if _is_named(instance):
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Expecting value/list but got object at item {index} of input list",
                )
            add(index, min(dtypes), instance, "")
    return {key: np.stack(arrays) for key, arrays in columns.items()}


def columnar_inputs(value: Any, dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: a value for one input, or an object keyed by name."""
    if not isinstance(value, dict) or _is_b64(value):
        if len(dtypes) > 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map",
            )
        (key,) = dtypes
        return {key: _tensor(value, dtypes[key])}
    arrays = {}
    for key in sorted(dtypes):
        if key not in value:
            raise ServingError(
                "INVALID_ARGUMENT", f"Missing named input: {key} in 'inputs' object."
            )
        arrays[key] = _tensor(value[key], dtypes[key])
    return arrays


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# JSON responses (util/json_tensor.cc) -----------------------------------------------------------


def _number_text(value: Any, dtype: np.dtype) -> str:
    """WriteDecimal(): `%g` if it reads back exactly, else max_digits10 digits; `.0` on whole
    numbers; NaN and (-)Infinity as JSON extensions."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    single = dtype == np.float32
    text = f"{value:g}"
    if (np.float32(text) if single else float(text)) != value:
        text = f"{value:.{9 if single else 17}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _value_text(value: Any, dtype: np.dtype, as_bytes: bool) -> str:
    if dtype.kind == "f":
        if dtype not in (np.float32, np.float64):
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Failed to write JSON value for tensor type: {tf.as_dtype(dtype).name}",
            )
        return _number_text(value, dtype)
    if dtype.kind == "b":
        return "true" if value else "false"
    if dtype.kind in "iu":
        return str(int(value))
    if as_bytes:
        return '{"b64": "' + base64.b64encode(value).decode() + '"}'
    return json.dumps(bytes(value).decode("utf-8", "surrogateescape"), ensure_ascii=False)


def _array_text(array: np.ndarray, as_bytes: bool) -> str:
    """AddTensorValues(): nested lists, a scalar alone."""
    if array.ndim == 0:
        return _value_text(array[()], array.dtype, as_bytes)
    if array.ndim == 1:
        values = (_value_text(value, array.dtype, as_bytes) for value in array.tolist())
        return "[" + ", ".join(values) + "]"
    return "[" + ", ".join(_array_text(item, as_bytes) for item in array) + "]"


def _as_bytes(key: str, array: np.ndarray) -> bool:
    return array.dtype == object and key.endswith("_bytes")


def row_json(arrays: dict[str, np.ndarray]) -> str:
    """MakeRowFormatJsonFromTensors: one entry per batch item; one object each if several."""
    batch = 0
    for key, array in arrays.items():
        if array.ndim == 0:
            raise ServingError("INVALID_ARGUMENT", f"Tensor name: {key} has no shape information ")
        if array.shape[0] < 1:
            raise ServingError(
                "INVALID_ARGUMENT", f"Tensor name: {key} has invalid batch size: {array.shape[0]}"
            )
        if batch and array.shape[0] != batch:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Tensor name: {key} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}",
            )
        batch = array.shape[0]
    items = []
    for index in range(batch):
        if len(arrays) == 1:
            ((key, array),) = arrays.items()
            items.append(_array_text(array[index, ...], _as_bytes(key, array)))
        else:
            fields = (
                f"{json.dumps(key)}: {_array_text(array[index, ...], _as_bytes(key, array))}"
                for key, array in arrays.items()
            )
            items.append("{" + ", ".join(fields) + "}")
    return '{"predictions": [' + ", ".join(items) + "]}"


def columnar_json(arrays: dict[str, np.ndarray]) -> str:
    """MakeColumnarFormatJsonFromTensors: the values alone, or an object if several outputs."""
    if len(arrays) == 1:
        ((key, array),) = arrays.items()
        return '{"outputs": ' + _array_text(array, _as_bytes(key, array)) + "}"
    fields = (
        f"{json.dumps(key)}: {_array_text(array, _as_bytes(key, array))}"
        for key, array in arrays.items()
    )
    return '{"outputs": {' + ", ".join(fields) + "}}"
