"""TF Serving's config files parse with TF Serving's schemas and hold what the stack relies on."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from tests.docker.common import (
    COMPOSE,
    SMOKE,
    SMOKE_STACK,
    TFSERVING,
    flags,
    load_yaml,
    mounted_file,
)
from tests.docker.text_proto import parse_text_proto, text_proto_classes
from tf_alexnet import contract


@pytest.fixture(scope="module")
def tfserving() -> dict[str, Any]:
    return load_yaml(COMPOSE)["services"]["tfserving"]


@pytest.mark.parametrize("name", ["batching.config", "batching_gpu.config"])
def test_batching_holds_the_warmup_batch(tfserving: dict[str, Any], name: str) -> None:
    tfserving_flags = flags(tfserving)
    assert tfserving_flags["enable_batching"] == "true"
    assert mounted_file(tfserving, tfserving_flags["batching_parameters_file"]).name == (
        "batching.config"
    )
    batching = parse_text_proto(TFSERVING / name, "BatchingParameters")
    from tf_alexnet.sources import sample_images

    # The export's warmup replays one request holding every sample image: it must fit a batch.
    warmup_batch = inspect.signature(sample_images).parameters["count"].default
    assert batching.max_batch_size.value >= warmup_batch
    assert batching.batch_timeout_micros.value <= 10_000
    assert batching.num_batch_threads.value >= 1 and batching.max_enqueued_batches.value >= 1
    sizes = list(batching.allowed_batch_sizes)
    if sizes:  # TF Serving's rules: increasing, the last one max_batch_size
        assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value


def test_warmup_requests_name_the_served_model_and_signature() -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    from tf_alexnet.export import warmup_records

    (model,) = parse_text_proto(
        TFSERVING / "models.config", "ModelServerConfig"
    ).model_config_list.config
    for record in warmup_records(model.name, [b"\x89PNG", b"\x89PNG"]):
        spec = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request.model_spec
        assert spec.name == contract.MODEL_NAME
        assert spec.signature_name == contract.SIGNATURE_IMAGE_BYTES


def test_prometheus_metrics_are_enabled_where_the_smoke_test_reads_them(
    tfserving: dict[str, Any],
) -> None:
    config = mounted_file(tfserving, flags(tfserving)["monitoring_config_file"])
    prometheus = parse_text_proto(config, "MonitoringConfig").prometheus_config
    assert prometheus.enable
    smoke = SMOKE.read_text() + SMOKE_STACK.read_text()
    assert f'f"{{stack.tfserving}}{prometheus.path}"' in smoke
    assert f'MODEL_NAME = "{contract.MODEL_NAME}"' in smoke


def test_text_proto_schema_rejects_typos() -> None:
    from google.protobuf import text_format

    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse(
            "max_batch_sise { value: 8 }", text_proto_classes()["BatchingParameters"]()
        )


def test_the_bf16_session_config_is_a_session_config_that_turns_on_the_bf16_rewrite() -> None:
    """`--tensorflow_session_config_file` takes a TensorFlow ConfigProto in text format."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

    config = text_format.Parse(
        (TFSERVING / "session_bf16.config").read_text(), config_pb2.ConfigProto()
    )
    rewrite = config.graph_options.rewrite_options
    assert rewrite.auto_mixed_precision_onednn_bfloat16 == rewriter_config_pb2.RewriterConfig.ON
    assert config == text_format.Parse(  # nothing else: the rest stays TF Serving's default
        "graph_options { rewrite_options { auto_mixed_precision_onednn_bfloat16: ON } }",
        config_pb2.ConfigProto(),
    )
