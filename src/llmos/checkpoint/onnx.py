"""Moved: the ONNX export lives in :mod:`llmos.inference.onnx_export` (checkpoint/ does not
import inference/). This name stays only until ``cli.py`` and ``recipes/compress.py`` import
it from there; the lookup is lazy, so importing this module loads nothing from inference/."""

from __future__ import annotations

from typing import Any

_MOVED = ("export_onnx", "exportable", "EmbeddingHead", "INPUTS")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from llmos.inference import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
