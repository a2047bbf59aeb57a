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


def model_logger() -> logging.Logger:
    """`tf_alexnet_serving.model`: one JSON line on stderr per event of the model served."""
    logger = logging.getLogger("tf_alexnet_serving.model")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class ModelEvents:
    """The model log's lines for one backend: `{"time", "event": "model_<event>", "model",
    ...}`. A backend that learns its version from TF Serving reports each answer of its
    readiness check; a line is written when something changed, not at every check."""

    def __init__(self, model: str, backend: str) -> None:
        self.model = model
        self.backend = backend
        self._log = model_logger()
        self._serving: int | None = None  # the version last logged as served
        self._unavailable: str | None = None  # the reason last logged, while unavailable

    def event(self, event: str, **fields: Any) -> None:
        line = {"time": timestamp(), "event": f"model_{event}", "model": self.model, **fields}
        self._log.info(json.dumps(line))

    def available(self, version: int, classes: int | None) -> None:
        """`model_serving` for a version served that was not (the first one learnt, a new
        one, or the same one back after it was unavailable)."""
        if version != self._serving or self._unavailable is not None:
            self.event(
                "serving",
                version=version,
                previous_version=self._serving,
                classes=classes,
                backend=self.backend,
            )
        self._serving, self._unavailable = version, None

    def unavailable(self, reason: str) -> None:
        """`model_unavailable` with its reason, once until the reason changes or a version
        serves again (readiness is checked at every poll, and by requests meanwhile)."""
        if reason != self._unavailable:
            self.event("unavailable", version=self._serving, error=reason, backend=self.backend)
        self._unavailable = reason


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
