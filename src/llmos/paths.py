"""Where llmos keeps its data: ``$LLMOS_HOME`` (default ``~/.llmos``)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.llmos")


def llmos_home() -> Path:
    """The llmos home directory: ``$LLMOS_HOME`` if set, else ``~/.llmos``."""
    return Path(os.environ.get("LLMOS_HOME") or DEFAULT_HOME).expanduser()


def data_dir() -> Path:
    """Prepared datasets live here (``$LLMOS_HOME/data``)."""
    return llmos_home() / "data"


def tokenizers_dir() -> Path:
    """Trained tokenizers live here (``$LLMOS_HOME/tokenizers``)."""
    return llmos_home() / "tokenizers"
