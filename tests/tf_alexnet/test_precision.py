"""Precision by hardware: bf16 detection, `auto`, exporting bf16-trained runs, the bf16 rewrite."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2

from tests.conftest import REPO, TINY_TRAINING, run_cli
from tf_alexnet import AlexNet, contract
from tf_alexnet.errors import UserError
from tf_alexnet.export import float32_model, training_policy
from tf_alexnet.hardware import (
    Bf16Support,
    CpuInfo,
    bf16_support,
    enable_bf16_rewrite,
    read_cpu_info,
)
from tf_alexnet.strategy import choose_precision

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"


def amd(family: int) -> str:
    """An AMD EPYC's /proc/cpuinfo with AVX512-BF16: family 25 is Zen 4, 26 Zen 5."""
    return (
        f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: 2\n"
        "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n"
    )


@pytest.fixture
def cpuinfo(tmp_path):
    def write(text: str) -> CpuInfo:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return read_cpu_info(path)

    return write


def test_cpuinfo_is_read(cpuinfo):
    xeon = cpuinfo(XEON)
    assert xeon.model == "Intel(R) Xeon(R) Platinum 8481C"
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= xeon.flags
    assert (xeon.vendor, xeon.family) == ("unknown", None)  # lines the file does not have
    zen5 = cpuinfo(amd(26))
    assert (zen5.vendor, zen5.family, zen5.model) == ("AuthenticAMD", 26, "AMD EPYC")
    assert read_cpu_info("/no/such/file") == CpuInfo("unknown", frozenset())


def test_bf16_units_are_detected(cpuinfo):
    xeon, epyc = cpuinfo(XEON), cpuinfo(EPYC)
    assert bf16_support(xeon, env={}).available
    assert "amx_bf16" in bf16_support(xeon, env={}).reason
    # AVX512-BF16 without AMX (Cooper Lake, or a VM hiding AMX) measured slower than float32.
    only_avx512_bf16 = bf16_support(CpuInfo("Cooper Lake", frozenset({"avx512_bf16"})), env={})
    assert not only_avx512_bf16.available
    assert "avx512_bf16 but no AMX (amx_bf16)" in only_avx512_bf16.reason
    verdict = bf16_support(epyc, env={})
    assert not verdict.available and "AMD EPYC 7B13" in verdict.reason


def test_avx512_bf16_counts_on_amd_zen4_and_newer_only(cpuinfo):
    """bf16 against float32, d2l: Zen 5 1.7x training, 1.6x serving; Zen 4 1.8-2.0x and 1.9x;
    a Xeon without AMX 0.54x (docs/precision.md)."""
    zen5 = bf16_support(cpuinfo(amd(26)), env={})
    assert zen5.available and "avx512_bf16 units (AuthenticAMD cpu family 26)" in zen5.reason
    zen4 = bf16_support(cpuinfo(amd(25)), env={})
    assert zen4.available and "avx512_bf16 units (AuthenticAMD cpu family 25)" in zen4.reason
    assert bf16_support(cpuinfo(amd(27)), env={}).available
    older = bf16_support(cpuinfo(amd(23)), env={})  # no such CPU has the flag; the rule says no
    assert not older.available and "only on AMD Zen 4 and newer" in older.reason
    intel = CpuInfo("Xeon", frozenset({"avx512_bf16"}), vendor="GenuineIntel", family=26)
    assert not bf16_support(intel, env={}).available  # the family rule is AMD's only


def test_onednn_caps_idle_avx512_bf16_below_its_own_isa(cpuinfo):
    """Measured on Zen 5: a cap of AVX512_CORE_BF16 keeps the bf16 rewrite at 1.7x float32,
    AVX512_CORE_VNNI makes it 0.29x (emulated)."""
    zen5 = cpuinfo(amd(26))
    assert bf16_support(zen5, env={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}).available
    for cap in ("AVX512_CORE_VNNI", "avx2"):
        capped = bf16_support(zen5, env={"ONEDNN_MAX_CPU_ISA": cap})
        assert not capped.available and f"ONEDNN_MAX_CPU_ISA={cap.upper()}" in capped.reason


def test_onednn_settings_that_idle_the_bf16_units_are_honoured(cpuinfo):
    xeon = cpuinfo(XEON)
    capped = bf16_support(xeon, env={"ONEDNN_MAX_CPU_ISA": "avx2"})
    assert not capped.available and "ONEDNN_MAX_CPU_ISA=AVX2" in capped.reason
    assert bf16_support(xeon, env={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}).available
    no_amx = bf16_support(xeon, env={"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"})
    assert not no_amx.available and "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16" in no_amx.reason
    off = bf16_support(xeon, env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert not off.available and "TF_ENABLE_ONEDNN_OPTS=0" in off.reason


def test_auto_picks_bf16_only_where_the_units_are():
    assert choose_precision("auto", Bf16Support(True, "units")).policy == "mixed_bfloat16"
    fp32 = choose_precision("auto", Bf16Support(False, "no units"))
    assert fp32.policy == "float32" and fp32.reason == "auto: no units"
    # An explicit choice always wins over the hardware, and says when it will be slow.
    emulated = choose_precision("bf16", Bf16Support(False, "no units"))
    assert emulated.policy == "mixed_bfloat16"
    assert emulated.reason == (
        "bf16: set explicitly; no units, so bf16 runs slower than float32 here"
    )
    assert choose_precision("bf16", Bf16Support(True, "units")).reason == "bf16: set explicitly"
    assert choose_precision("off", Bf16Support(True, "units")).policy == "float32"
    # On this machine, auto follows the detection.
    here = choose_precision("auto")
    assert (here.policy == "mixed_bfloat16") == bf16_support().available
    with pytest.raises(UserError, match="Received: 'bf32'"):
        choose_precision("bf32")


def test_paper_variant_trains_under_bf16():
    """LRN has no bf16 CPU kernel: the layer normalizes in float32 under a bf16 policy."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = AlexNet(input_shape=(67, 67, 3), classes=3, variant="paper")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("norm1").compute_dtype == "bfloat16"
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(np.random.rand(4, 67, 67, 3), np.array([0, 1, 2, 0]), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    copy = float32_model(model)
    assert training_policy(model) == "mixed_bfloat16" and training_policy(copy) == "float32"
    x = np.random.default_rng(0).random((2, 67, 67, 3), np.float32)
    assert copy(x).dtype == tf.float32
    assert np.abs(np.asarray(copy(x)) - np.asarray(model(x), np.float32)).max() < 0.1
    for a, b in zip(copy.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_a_bf16_trained_run_exports_as_float32(fashion_mnist, tmp_path):
    """The issue's failure: `train --mixed-precision bf16` then `export` was refused."""
    config = {**TINY_TRAINING, "train_examples": 256, "epochs": 1, "mixed_precision": "bf16"}
    (tmp_path / "bf16.json").write_text(json.dumps(config))
    trained = run_cli(
        "train", "--config", str(tmp_path / "bf16.json"), "--run-dir", str(tmp_path / "run")
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    reason = choose_precision("bf16").reason  # names the emulation where there are no units
    assert reason.startswith("bf16: set explicitly")
    assert f"Precision: mixed_bfloat16 ({reason})" in trained.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dtype_policy"] == "mixed_bfloat16"
    assert metrics["mixed_precision"] == {"requested": "bf16", "reason": reason}

    exported = run_cli("export", str(tmp_path / "run"), "--base-path", str(tmp_path / "models"))
    assert exported.returncode == 0, exported.stderr[-3000:]
    version = tmp_path / "models" / contract.MODEL_NAME / "1"
    metadata = json.loads((version / "assets.extra" / "metadata.json").read_text())
    assert metadata["validation_max_abs_difference"] <= 1e-5  # against the float32 copy
    precision = metadata["precision"]
    assert precision["stored"] == "float32" and precision["trained"] == "mixed_bfloat16"
    assert 0 < precision["max_abs_difference_to_trained"] <= 5e-2  # bf16 rounding, not zero
    checkpoint = tf.train.load_checkpoint(str(version / "variables" / "variables"))
    dtypes = checkpoint.get_variable_to_dtype_map()
    weights = {name: dtype for name, dtype in dtypes.items() if "OBJECT_GRAPH" not in name}
    assert weights and set(weights.values()) == {tf.float32}
    loaded = tf.saved_model.load(str(version))
    pixels = tf.random.uniform((2, 28, 28, 1))
    outputs = loaded.signatures[contract.SIGNATURE_IMAGE_TENSOR](
        **{contract.INPUT_IMAGE_TENSOR: pixels}
    )
    assert outputs[contract.OUTPUT_PROBABILITIES].dtype == tf.float32
    np.testing.assert_allclose(
        outputs[contract.OUTPUT_PROBABILITIES].numpy().sum(axis=1), 1, atol=1e-5
    )


def test_bf16_rewrite_modes():
    try:
        assert not enable_bf16_rewrite("off").available
        assert not tf.config.optimizer.get_experimental_options().get(
            "auto_mixed_precision_onednn_bfloat16"
        )
        assert enable_bf16_rewrite("on").available
        assert tf.config.optimizer.get_experimental_options()[
            "auto_mixed_precision_onednn_bfloat16"
        ]
        assert enable_bf16_rewrite("auto").available == bf16_support().available
        with pytest.raises(ValueError, match="Received: mode='fast'"):
            enable_bf16_rewrite("fast")
    finally:
        tf.config.optimizer.set_experimental_options(
            {"auto_mixed_precision_onednn_bfloat16": False}
        )


def test_tf_serving_session_config_parses():
    """The file TF Serving reads with --tensorflow_session_config_file is a valid ConfigProto."""
    text = (REPO / "serving" / "tfserving" / "session_bf16.config").read_text()
    proto = text_format.Parse(text, config_pb2.ConfigProto())
    rewrite = proto.graph_options.rewrite_options
    assert rewrite.auto_mixed_precision_onednn_bfloat16 == rewrite.ON


def test_local_backend_reports_the_bf16_rewrite(model_base):
    from tf_alexnet_serving.backends import LocalBackend
    from tf_alexnet_serving.settings import Settings

    try:
        backend = LocalBackend(Settings(model_base_path=str(model_base), bf16="off"))
        assert backend.metadata()["bf16_rewrite"] == {
            "enabled": False,
            "reason": "off: set explicitly",
        }
        auto = LocalBackend(Settings(model_base_path=str(model_base)))  # the default: auto
        assert auto.metadata()["bf16_rewrite"]["enabled"] == bf16_support().available
    finally:
        tf.config.optimizer.set_experimental_options(
            {"auto_mixed_precision_onednn_bfloat16": False}
        )


def test_bf16_rewrite_serves_probabilities_close_to_float32(model_base, test_images):
    """With the rewrite on, served probabilities carry bf16 rounding (docs/precision.md), within
    the bf16 export tolerance of the float32 graph's; on bf16 hardware they do differ from it."""
    version = str(model_base / contract.MODEL_NAME / "1")
    images = tf.constant(test_images[:8])

    def serve() -> np.ndarray:  # a fresh load: grappler's options apply as functions first run
        signature = tf.saved_model.load(version).signatures[contract.SIGNATURE_IMAGE_BYTES]
        return signature(**{contract.INPUT_IMAGE_BYTES: images})[
            contract.OUTPUT_PROBABILITIES
        ].numpy()

    try:
        enable_bf16_rewrite("off")
        exact = serve()
        enable_bf16_rewrite("on")
        rewritten = serve()
    finally:
        tf.config.optimizer.set_experimental_options(
            {"auto_mixed_precision_onednn_bfloat16": False}
        )
    assert rewritten.dtype == np.float32 and rewritten.shape == exact.shape
    np.testing.assert_allclose(rewritten, exact, atol=5e-2)
    np.testing.assert_allclose(rewritten.sum(axis=1), 1, atol=1e-2)
    if bf16_support().available:
        assert not np.array_equal(rewritten, exact)
