"""Facade settings, from `TF_ALEXNET_SERVE_*` environment variables."""

from __future__ import annotations

import difflib
import functools
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tf_alexnet import contract

ENV_PREFIX = "TF_ALEXNET_SERVE_"

DAY_S = 86_400.0
"""The longest any timeout or interval may be: a finite deadline for gRPC and asyncio."""


class Settings(BaseSettings):
    """Every knob of the facade; `TF_ALEXNET_SERVE_<NAME>` sets `<name>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, protected_namespaces=())

    backend: Literal["auto", "local", "tfserving-rest", "tfserving-grpc"] = "auto"
    """`auto`: `tfserving-rest` when `tfserving_rest_url` is set, `tfserving-grpc` when
    `tfserving_grpc_address` is set, else `local`."""
    tfserving_rest_url: str | None = None
    tfserving_grpc_address: str | None = None
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """gRPC backend: the largest message sent or received. Left at its default, it grows to
    what an image of `max_body_bytes` needs (`grpc_message_bytes_needed`); set below that, the
    facade refuses to start (an image it accepts could not be sent)."""
    timeout_s: float = Field(default=30.0, gt=0, le=DAY_S, allow_inf_nan=False)
    model_base_path: str = "models"
    model_name: str = contract.MODEL_NAME
    model_version: int | None = Field(default=None, ge=1)
    model_label: str | None = None
    class_names: list[str] | None = None
    """Optional: the names the served model must have (checked, never used over the model's);
    with TF Serving, it also names top-k classes the model has not reported yet."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """Local backend: run the float32 export on the CPU's bf16 units (AMX, or AVX512-BF16 on
    AMD Zen 4+) through TensorFlow's graph rewrite; `auto` turns it on where they beat float32."""
    model_poll_s: float = Field(default=1.0, ge=0, le=DAY_S, allow_inf_nan=False)
    """How often to look for a new version: local backend, in the model folder (TF Serving's
    `--file_system_poll_wait_seconds`; not when `model_version` is set); `tfserving-rest`, in
    TF Serving's model status. 0 never looks."""
    max_batch_size: int = Field(default=32, ge=1)
    max_batch_wait_ms: float = Field(default=2.0, ge=0, le=DAY_S * 1000, allow_inf_nan=False)
    max_batch_pixels: int = Field(default=50_000_000, ge=1)
    max_queue: int = Field(default=128, ge=1)
    """Images waiting for the local backend's model; more get 503 with Retry-After."""
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    body_timeout_s: float = Field(default=60.0, gt=0, le=DAY_S, allow_inf_nan=False)
    """Seconds to receive a request's whole body; a slower upload gets 408."""
    shutdown_timeout_s: int = Field(default=5, ge=0, le=DAY_S)
    """On SIGTERM, seconds that requests in progress get to finish before they are cancelled
    (uvicorn's `timeout_graceful_shutdown`; without it, a stalled upload holds the shutdown up
    for ever). Below Docker's 10 s before it kills the container."""
    header_timeout_s: float = Field(default=10.0, gt=0, le=DAY_S, allow_inf_nan=False)
    """Seconds for a request's headers to arrive, from the connection's opening or the
    request's first byte; a slower client gets 408 (see `protocol.py`)."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Request line and headers; larger gets 431."""
    max_connections: int = Field(default=1000, ge=1)
    """Open connections; one more gets 503 at once (keep it under `ulimit -n`)."""
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Request bodies held at once, all requests together; a body that would go past it gets
    503 with Retry-After (each byte held costs about four more while it is parsed)."""
    max_files: int = Field(default=16, ge=1)
    max_pixels: int = Field(default=25_000_000, ge=1)
    max_top_k: int = Field(default=contract.NUM_CLASSES, ge=1)
    api_key: str | None = None
    request_log: bool = True
    """One JSON line per request on stderr (logger `tf_alexnet_serving.requests`)."""
    log_format: Literal["json", "text"] = "json"
    """`tf-alexnet serve`: uvicorn's lines and other libraries' warnings as JSON lines too (the
    facade's own are JSON either way), or in uvicorn's text format."""
    cors_origins: list[str] = []
    """Origins as browsers send them in `Origin` (`https://app.example:8443`); `*` for any."""

    @field_validator("model_name")
    @classmethod
    def _a_plain_name(cls, name: str) -> str:
        """A folder name under `model_base_path`, as TF Serving's model names are."""
        if not name or name in {".", ".."} or any(c in name for c in "/\\\0"):
            raise ValueError(f"should be a folder name, without '/'. Received: {name!r}")
        return name

    @field_validator("model_base_path")
    @classmethod
    def _a_folder(cls, path: str) -> str:
        """An empty path is the current folder to `pathlib`: `MODEL_BASE_PATH=` (a variable
        left blank in a Compose file or `.env`) served whatever `alexnet/` the server was
        started beside, or failed with a message about the wrong folder."""
        if not path.strip():
            raise ValueError(
                f"should be the folder that holds the model's folder, such as models; it is "
                f"empty ({ENV_PREFIX}MODEL_BASE_PATH or --model-base-path), which would mean "
                f"the current folder. Received: {path!r}"
            )
        return path

    @field_validator("tfserving_rest_url")
    @classmethod
    def _a_server_url(cls, url: str | None) -> str | None:
        """TF Serving's REST root: `http(s)://host:port`, maybe under a proxy's path prefix,
        never the model's own URL (the backend adds `/v1/models/NAME`)."""
        if url is None:
            return None
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"should be an http:// or https:// URL. Received: {url!r}")
        try:
            port_ok = parsed.port is None or parsed.port > 0
        except ValueError:  # out of range, or not a number: every call failed at run time
            port_ok = False
        if not port_ok or parsed.query or parsed.fragment:  # `?x=1` came before /v1/models/...
            raise ValueError(
                "should be an http:// or https:// URL with a port from 1 to 65535, without "
                f"query or fragment, such as http://tfserving:8501. Received: {url!r}"
            )
        if "/v1/" in f"{parsed.path}/":
            raise ValueError(
                "should be TF Serving's root (such as http://tfserving:8501), without "
                f"/v1/models/...: the facade adds it. Received: {url!r}"
            )
        return url

    @field_validator("api_key")
    @classmethod
    def _a_header_value(cls, key: str | None) -> str | None:
        """Sent as `X-API-Key`: header values are bytes, and browsers (`fetch`) and most
        clients send only ISO-8859-1, so a key beyond printable ASCII could never match."""
        if key == "":  # a Compose `API_KEY=${SECRET}` with SECRET unset: no key, silently
            raise ValueError(
                f"is empty, which would serve without a key: set a key, or unset "
                f"{ENV_PREFIX}API_KEY to serve without one. Received: ''"
            )
        if not (key is None or (key.isascii() and key.isprintable() and key == key.strip())):
            raise ValueError(
                "should be printable ASCII without leading or trailing spaces (it is sent as "
                "the X-API-Key header). Received: a key of "
                f"{len(key)} characters with {_first_unfit(key)!r}"
            )
        return key

    @field_validator("cors_origins")
    @classmethod
    def _browser_origins(cls, origins: list[str]) -> list[str]:
        """Each origin as a browser writes it in its `Origin` header, which CORS compares
        character for character: `http://app.example/` (copied from the address bar),
        `HTTP://App.Example` or `https://app.example:443` matched no request, and every call
        from that origin was refused without a word of why."""
        return [_browser_origin(origin) for origin in origins]

    @field_validator("tfserving_grpc_address")
    @classmethod
    def _a_grpc_target(cls, address: str | None) -> str | None:
        """A gRPC target (`host:port`, `dns:///host:port`, `unix:PATH`), not a URL."""
        if address is None:
            return None
        if address.startswith(("http://", "https://")):
            raise ValueError(f"should be host:port, without http://. Received: {address!r}")
        if address.startswith(GRPC_SCHEMES):
            return address
        # Without a port gRPC dials 443 (`tfserving` for `tfserving:8500`), and an empty
        # address (a Compose variable left blank) chose the local backend: both silently.
        found = re.fullmatch(r"(\[[^\]\s]+\]|[^:\s/\[\]]+):([0-9]{1,5})", address)
        if found is None or not 0 < int(found[2]) < 65536:
            raise ValueError(
                "should be host:port, such as tfserving:8500 (or a gRPC target such as "
                f"dns:///tfserving:8500 or unix:/run/tfserving.sock). Received: {address!r}"
            )
        return address

    @field_validator("class_names")
    @classmethod
    def _names_or_none(cls, names: list[str] | None) -> list[str] | None:
        """`CLASS_NAMES=[]` started, then answered every request 503 ("has 0 names but the
        served model has 10"); a blank name never matches a model's either."""
        if names is not None and (not names or not all(name.strip() for name in names)):
            raise ValueError(
                "should be the model's class names in class-id order, none of them blank (or "
                f"unset, to use the model's own names). Received: {names[:12]!r}"
            )
        return names

    @field_validator("model_label")
    @classmethod
    def _a_label(cls, label: str | None) -> str | None:
        """A label TF Serving's REST path can name (`/labels/<label>`): not empty (a Compose
        variable left blank asked TF Serving for the label "", and every request failed)."""
        if label is not None and (not label.strip() or any(c in label for c in "/:")):
            raise ValueError(
                "should be a version label such as stable or canary (not empty, without '/' "
                f"or ':'). Received: {label!r}"
            )
        return label

    @model_validator(mode="after")
    def _one_model_selection(self) -> Settings:
        """A version number or a label, not both (TF Serving's ModelSpec takes one)."""
        if self.model_version is not None and self.model_label is not None:
            raise ValueError(
                "model_version and model_label both pick the version served: set one. "
                f"Received: model_version={self.model_version}, "
                f"model_label={self.model_label!r}"
            )
        return self

    @model_validator(mode="after")
    def _a_label_for_tf_serving(self) -> Settings:
        """Labels are TF Serving's: the local backend would serve the newest version instead."""
        if self.model_label is not None and self.resolved_backend() == "local":
            raise ValueError(
                "model_label picks a version by TF Serving's labels, which the local backend "
                "does not have: set model_version, or a TF Serving backend. "
                f"Received: model_label={self.model_label!r}"
            )
        return self

    @model_validator(mode="after")
    def _an_address_for_tf_serving(self) -> Settings:
        """A TF Serving backend chosen by name needs its address."""
        needed = {
            "tfserving-rest": "tfserving_rest_url",
            "tfserving-grpc": "tfserving_grpc_address",
        }
        setting = needed.get(self.backend)
        if setting is not None and not getattr(self, setting):
            raise ValueError(
                f"backend {self.backend!r} needs {setting} (TF_ALEXNET_SERVE_{setting.upper()})"
            )
        if self.backend == "auto" and self.tfserving_rest_url and self.tfserving_grpc_address:
            raise ValueError(
                "both tfserving_rest_url and tfserving_grpc_address are set: set backend "
                "(TF_ALEXNET_SERVE_BACKEND) to tfserving-rest or tfserving-grpc to pick one"
            )
        return self

    @model_validator(mode="after")
    def _a_body_fits_the_upload_budget(self) -> Settings:
        """A body the facade accepts must fit the bytes all uploads may hold: with
        MAX_UPLOAD_BYTES below MAX_BODY_BYTES, a body between them was answered 503
        "Overloaded ... retry later" however idle the server, on every retry."""
        if self.max_upload_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_upload_bytes ({ENV_PREFIX}MAX_UPLOAD_BYTES) should be at least "
                f"max_body_bytes ({ENV_PREFIX}MAX_BODY_BYTES={self.max_body_bytes}): a body "
                "between them could never be held. Received: "
                f"max_upload_bytes={self.max_upload_bytes}"
            )
        return self

    @model_validator(mode="after")
    def _grpc_messages_fit_a_body(self) -> Settings:
        """One image per Predict call, as large as a body may be: a gRPC limit below it made
        the facade accept an upload, then answer 413 "too large to send to TF Serving"."""
        if self.resolved_backend() != "tfserving-grpc":
            return self
        needed = grpc_message_bytes_needed(self)
        if self.grpc_max_message_bytes >= needed:
            return self
        if "grpc_max_message_bytes" not in self.model_fields_set:  # the default: grown to fit
            self.grpc_max_message_bytes = needed
            return self
        raise ValueError(
            f"grpc_max_message_bytes ({ENV_PREFIX}GRPC_MAX_MESSAGE_BYTES) should be at least "
            f"{needed:,} for a body of max_body_bytes ({ENV_PREFIX}MAX_BODY_BYTES="
            f"{self.max_body_bytes}) to reach TF Serving as one image: raise it, or lower "
            f"MAX_BODY_BYTES. Received: grpc_max_message_bytes={self.grpc_max_message_bytes}"
        )

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        if self.tfserving_rest_url:
            return "tfserving-rest"
        return "tfserving-grpc" if self.tfserving_grpc_address else "local"


DEFAULT_PORTS = {"http": 80, "https": 443}

GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:", "xds:")
"""gRPC target schemes (gRPC's naming document): such a target is passed on unchecked."""

GRPC_REQUEST_OVERHEAD = 1024
"""A Predict request's bytes besides its image and the model's name and label: the signature
name, the input's name, the tensor's type and shape, field tags and length prefixes (about
60 bytes for the default names)."""


def grpc_message_bytes_needed(settings: Settings) -> int:
    """The gRPC message size that carries one image of `max_body_bytes` to TF Serving."""
    names = len(settings.model_name.encode()) + len((settings.model_label or "").encode())
    return settings.max_body_bytes + names + GRPC_REQUEST_OVERHEAD


def _browser_origin(origin: str) -> str:
    """`origin` in a browser's spelling: scheme and host in lower case, without the scheme's
    default port or a trailing `/`; ValueError for what is not an origin (no scheme, a path)."""
    if origin in ("*", "null"):
        return origin
    unfit = ValueError(
        "should be origins such as https://app.example or http://localhost:3000 (scheme, "
        f"host and port alone), or *. Received: {origin!r}"
    )
    try:
        parts = urllib.parse.urlsplit(origin.strip())
    except ValueError:  # "Invalid IPv6 URL" (`http://[::1:8080`), said without the origin
        raise unfit from None
    if (
        not parts.scheme
        or not parts.hostname
        or parts.path not in ("", "/")
        or any((parts.query, parts.fragment, parts.username, parts.password))
    ):
        raise unfit
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        raise unfit from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = DEFAULT_PORTS.get(parts.scheme)
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _first_unfit(key: str) -> str:
    """The first character of `key` that makes it unfit for a header (never the key itself)."""
    if key != key.strip():
        return key[0] if key[0].isspace() else key[-1]
    return next(c for c in key if not (c.isascii() and c.isprintable()))


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each `TF_ALEXNET_SERVE_*` variable that names no setting: the facade
    would ignore it, and a misspelt one would leave its setting at the default, silently."""
    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    found = os.environ if environ is None else environ
    warnings = []
    for variable in sorted(key for key in found if key.upper().startswith(ENV_PREFIX)):
        if variable.upper() in known:
            continue
        close = difflib.get_close_matches(variable.upper(), known, n=1, cutoff=0.8)
        hint = f" Did you mean {close[0]}?" if close else ""
        warnings.append(f"{variable} names no setting and is ignored.{hint}")
    return warnings


@functools.cache
def get_settings() -> Settings:
    return Settings()
