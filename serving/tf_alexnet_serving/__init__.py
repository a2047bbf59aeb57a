"""The tf_alexnet serving facade: a FastAPI app in front of an exported AlexNet.

Installed under a distinct import name (`tf_alexnet_serving`), never as a plain `serving`.
It needs the `serve` extra (FastAPI, uvicorn, ...); without it, importing it says what to install.
"""

from tf_alexnet.errors import MissingServeExtra

try:
    from tf_alexnet_serving.app import create_app
    from tf_alexnet_serving.settings import Settings, get_settings
except ModuleNotFoundError as err:
    if (err.name or "").partition(".")[0] in ("tf_alexnet", "tf_alexnet_serving"):
        raise  # ours: a broken installation, not a missing extra
    raise MissingServeExtra(err) from None

__all__ = ["Settings", "create_app", "get_settings"]
