"""TF Serving's config text protos, parsed with message classes of TF Serving's own schemas."""

from __future__ import annotations

import pathlib
from typing import Any


def text_proto_classes() -> dict[str, Any]:
    """Message classes for TF Serving's config protos, to parse our files as TF Serving would.

    ModelServerConfig ships with tensorflow-serving-api. BatchingParameters (fields 1-7 of
    session_bundle_config.proto) and MonitoringConfig (monitoring_config.proto) do not, so their
    fields are declared here, by the same names, numbers and types. An unknown field or a value
    of the wrong type fails to parse, as it fails TF Serving's start.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
    from tensorflow_serving.config import model_server_config_pb2

    field = descriptor_pb2.FieldDescriptorProto
    schema = descriptor_pb2.FileDescriptorProto(
        name="tf_alexnet_tests/tfserving.proto",
        package="tf_alexnet_tests",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    int64 = (field.TYPE_MESSAGE, ".google.protobuf.Int64Value", field.LABEL_OPTIONAL)
    messages = {
        "BatchingParameters": [
            ("max_batch_size", *int64),
            ("batch_timeout_micros", *int64),
            ("max_enqueued_batches", *int64),
            ("num_batch_threads", *int64),
            ("thread_pool_name", field.TYPE_MESSAGE, ".google.protobuf.StringValue", 1),
            ("allowed_batch_sizes", field.TYPE_INT64, "", field.LABEL_REPEATED),
            ("pad_variable_length_inputs", field.TYPE_BOOL, "", field.LABEL_OPTIONAL),
        ],
        "PrometheusConfig": [
            ("enable", field.TYPE_BOOL, "", field.LABEL_OPTIONAL),
            ("path", field.TYPE_STRING, "", field.LABEL_OPTIONAL),
        ],
        "MonitoringConfig": [
            ("prometheus_config", field.TYPE_MESSAGE, ".tf_alexnet_tests.PrometheusConfig", 1),
        ],
    }
    for message, fields in messages.items():
        proto = schema.message_type.add(name=message)
        for number, (name, kind, type_name, label) in enumerate(fields, start=1):
            proto.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                proto.field[-1].type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(schema.SerializeToString())
    classes = {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tf_alexnet_tests.{name}")
        )
        for name in messages
    }
    classes["ModelServerConfig"] = model_server_config_pb2.ModelServerConfig
    return classes


def parse_text_proto(path: pathlib.Path, message: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), text_proto_classes()[message]())
