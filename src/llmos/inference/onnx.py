"""Run an exported ONNX encoder (``llmos export onnx``, ``llmos compress quantize --method
onnx-int8``) through ONNX Runtime behind the same call as the PyTorch models, so that the
encoder pipeline classifies, tags and embeds with it unchanged. The export itself is
:mod:`llmos.inference.onnx_export`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmos.checkpoint.io import ONNX_FILE
from llmos.errors import CheckpointError

__all__ = ["ONNX_FILE", "OnnxModel"]


class OnnxModel(nn.Module):
    """An ONNX Runtime session called like an encoder model: (ids, types, mask) -> the
    graph's one output (classifier logits (B, K), tagger logits (B, T, K) or pooled
    embeddings (B, C)) as a CPU float tensor."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: not a loadable ONNX model ({e})") from None
        self.output = self.session.get_outputs()[0].name
        self.inputs = [i.name for i in self.session.get_inputs()]
        # No weights live in torch; this empty parameter only tells callers the device (CPU).
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids (types and mask optional) -> the graph's output as a CPU float tensor."""
        feed = {
            "input_ids": input_ids,
            "token_type_ids": torch.zeros_like(input_ids)
            if token_type_ids is None
            else token_type_ids,
            "attention_mask": torch.ones_like(input_ids)
            if attention_mask is None
            else attention_mask,
        }
        arrays = {k: feed[k].cpu().long().numpy() for k in self.inputs}
        return torch.from_numpy(self.session.run([self.output], arrays)[0])
