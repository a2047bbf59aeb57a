"""Fixtures shared by the serving tests."""

import json
import logging

import pytest
from tf_alexnet_serving.logs import model_logger


class Events(logging.Handler):
    """The model log's JSON lines, as dicts."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def events():
    """What the backends of the test log (beside the log's own stderr handler)."""
    handler = Events()
    model_logger().addHandler(handler)
    yield handler
    model_logger().removeHandler(handler)
