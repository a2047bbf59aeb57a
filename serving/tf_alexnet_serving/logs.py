"""The server's log on stderr: one JSON object per line, whoever logs.

The facade's own lines (`tf_alexnet_serving.requests`, `tf_alexnet_serving.model`) are JSON
already; this formats uvicorn's (`Started server process`, errors with their traceback) and any
other library's warnings the same way, so a log shipper reads every line. `LOG_FORMAT=text`
keeps uvicorn's own format. (TensorFlow's C++ lines are not Python's logging:
`TF_CPP_MIN_LOG_LEVEL` is their knob.)
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from typing import Any

from uvicorn.config import LOGGING_CONFIG


def timestamp(seconds: float | None = None) -> str:
    """The `time` of a log line: UTC, ISO 8601, to the millisecond (default: now)."""
    moment = time.time() if seconds is None else seconds
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message"}`, plus `exception` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's `log_config`: JSON lines on stderr for uvicorn's loggers and the root logger
    (other libraries' warnings), or uvicorn's own text format."""
    if log_format == "text":
        return LOGGING_CONFIG
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            # TensorFlow's Python logger has a text handler of its own (retracing warnings...)
            "tensorflow": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            # A client's malformed multipart body is its 400, in the same words: python-multipart
            # also logged a WARNING line per such request, so any client could fill the log.
            "python_multipart": {"level": "ERROR"},
        },
    }
