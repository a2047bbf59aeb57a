"""The tf_alexnet serving facade: a FastAPI app in front of an exported AlexNet.

Installed under a distinct import name (`tf_alexnet_serving`), never as a plain `serving`.
"""

from tf_alexnet_serving.app import create_app
from tf_alexnet_serving.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
