"""CaptionDesk core: the library store, scanning, image decoding, captioning and training.

This package is a plain Python library: it never imports Qt, and it imports
torch/transformers lazily so that tools built on it start fast.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("captiondesk")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

APP_NAME = "CaptionDesk"
