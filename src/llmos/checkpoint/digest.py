"""What a checkpoint is, by content: the sha256 of its weights file.

A fine-tune records the digest of the encoder it started from (``task.json``'s
``init_digest``); ``llmos setup`` compares it with the encoder's digest now to tell a fine-tune
of a since-rebuilt encoder. Content, not file times: copies, clock skew and fast machines do
not change it. No torch here, so planning stays cheap.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# The weights file of a checkpoint (llmos.checkpoint.io.WEIGHTS_FILE; that module imports torch).
WEIGHTS_FILE = "model.safetensors"


def weights_digest(checkpoint: str | Path) -> str | None:
    """``sha256:<hex>`` of ``checkpoint/model.safetensors``, or None when it has none (an
    ONNX-only checkpoint)."""
    path = Path(checkpoint) / WEIGHTS_FILE
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
