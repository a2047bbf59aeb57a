"""The HTTP contract: a pydantic model for every answer and every error body.

FastAPI puts these in the OpenAPI document (`/openapi.json`, `/docs`), so clients can be
generated from it; routes return them, so an answer cannot drift from its declaration.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every refusal: 4xx for a client's mistake, 503/504 for the backend, never a traceback."""

    detail: str = Field(
        examples=["shirt.png: image of 9000x9000 pixels is over the limit of 25,000,000 pixels"]
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    status: str = Field(examples=["ready"])
    model: str = Field(examples=["alexnet"])
    version: int = Field(examples=[1])


class ModelRef(BaseModel):
    """The model version that answered."""

    name: str
    version: int


class TopClass(BaseModel):
    class_id: int
    class_name: str | None = Field(
        description="The model's name for the class (null only for a TF Serving backend that "
        "has not learnt it yet and has no CLASS_NAMES)."
    )
    score: float = Field(description="Softmax probability.")


class Prediction(BaseModel):
    """One image's answer: the best class, and the `top_k` best with their scores."""

    file: str = Field(description="The part's file name, or `instances[i]` for JSON bodies.")
    class_id: int
    class_name: str | None
    score: float
    top_k: list[TopClass]


class PredictResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]
    server_time_ms: float


class Metadata(BaseModel):
    """The served model; each backend adds what it knows (input shape, training metrics...)."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    class_names: list[str | None]


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again (when the cause is passing).",
        "schema": {"type": "integer"},
    }
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries: these statuses answer an `ErrorBody` (a 503 may say when
    to come back)."""
    return {
        status: {"model": ErrorBody, **({"headers": RETRY_AFTER} if status == 503 else {})}
        for status in statuses
    }
