"""int8 weight quantization of encoder checkpoints.

``int8-dynamic``: the encoder's linear layers keep their weights as int8 with one scale per
output channel (symmetric, ``w ~= q * scale``, q in [-127, 127]); at run time each call
quantizes its input activations (one scale per call, computed from the data: "dynamic") and
multiplies in int8 with fbgemm's kernels (``torch.ops.quantized.linear_dynamic``), accumulating
in int32 and returning fp32. The word embeddings are stored as int8 with one scale per row and
dequantized row by row as they are looked up. LayerNorm, biases, attention and the task heads
stay fp32.

Two outlier remedies, both measured in ``docs/BENCHMARKS.md``:

- SmoothQuant-style smoothing (Xiao et al., 2023): a few input channels of some layers carry
  activations 10-100x larger than the rest, and one per-call scale then leaves the others with
  a handful of levels. With per-channel input ranges ``a_j`` measured on calibration texts and
  weight column ranges ``w_j``, ``s_j = a_j^alpha / w_j^(1 - alpha)``: the layer computes
  ``(x / s) @ (W * s)^T``, the same product, with the difficulty moved into the weights, whose
  scales are per channel.
- keeping the most sensitive layers in fp32: each layer is quantized alone and scored by how
  far the model's outputs move on the calibration texts; the worst ``keep`` stay fp32.

A quantized checkpoint is a normal checkpoint directory: ``config.json`` says
``"quantization": "int8-dynamic"``, and ``model.safetensors`` holds, per quantized module,
``weight`` (int8), ``weight_scale`` (fp32) and, when smoothed, ``smooth`` (fp32). Loading
(:func:`prepare_quantized`) rebuilds the int8 modules from those names before the strict load.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("llmos.compress")

METHODS = ("int8-dynamic", "onnx-int8")
QMAX = 127


def _symmetric_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) fp32 -> (int8 values, fp32 scale per row)."""
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / QMAX  # (rows,)
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale.float()


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (a scale per output channel) and dynamically quantized
    int8 activations; returns fp32. Inference only: nothing here has a gradient."""

    def __init__(self, in_features: int, out_features: int, bias: bool, smooth: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("smooth", torch.ones(in_features) if smooth else None)
        self._packed: Any = None
        self._packed_key: tuple[int, ...] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, smooth: torch.Tensor | None = None) -> Int8Linear:
        """Quantize a trained linear layer; ``smooth`` (in_features,) moves activation range
        into the weights: the layer computes ``(x / smooth) @ (W * smooth)^T``."""
        m = cls(
            linear.in_features, linear.out_features, linear.bias is not None, smooth is not None
        )
        w = linear.weight.detach().float().cpu()
        if smooth is not None:
            w = w * smooth[None, :]
            m.smooth.copy_(smooth)
        q, scale = _symmetric_int8(w)
        m.weight.copy_(q)
        m.weight_scale.copy_(scale)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        return m.to(linear.weight.device)

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight this layer multiplies by (smoothing folded back out)."""
        w = self.weight.float() * self.weight_scale[:, None]
        return w / self.smooth[None, :] if self.smooth is not None else w

    def _packed_weight(self) -> Any:
        key = (self.weight.data_ptr(), self.weight._version, self.weight_scale._version)
        if self._packed_key != key:
            zeros = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():
                # torch 2.13 marks quantized tensors as deprecated; fbgemm's packed weights are
                # built from one (the pinned torch keeps them; see docs/guide.md).
                warnings.simplefilter("ignore", UserWarning)
                qw = torch._make_per_channel_quantized_tensor(
                    self.weight.cpu(), self.weight_scale.double().cpu(), zeros, 0
                )
            bias = self.bias.cpu() if self.bias is not None else None
            self._packed = torch.ops.quantized.linear_prepack(qw, bias)
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) fp32 -> (..., out) fp32."""
        if self.smooth is not None:
            x = x / self.smooth
        if x.device.type != "cpu":  # fbgemm is CPU-only: the exact dequantized product
            return F.linear(x, self.dequantized().to(x.dtype), self.bias)
        flat = x.reshape(-1, self.in_features).float().contiguous()
        # reduce_range: 7-bit activations keep AVX2's u8 x s8 -> s16 pair sums from saturating.
        y = torch.ops.quantized.linear_dynamic(flat, self._packed_weight(), True)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"smooth={self.smooth is not None}"
        )


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 with a scale per row, dequantized as it is read."""

    def __init__(self, num: int, dim: int, padding_idx: int | None) -> None:
        super().__init__()
        self.padding_idx = padding_idx
        self.register_buffer("weight", torch.zeros(num, dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> Int8Embedding:
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        q, scale = _symmetric_int8(emb.weight.detach().float().cpu())
        m.weight.copy_(q)
        m.weight_scale.copy_(scale)
        return m.to(emb.weight.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) token ids -> (..., dim) fp32 rows."""
        return self.weight[ids].float() * self.weight_scale[ids].unsqueeze(-1)


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the encoder's linear layers that int8 quantization replaces (the projections
    and feed-forward layers of every stored layer, and ALBERT's embedding projection)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (
            ".layers." in f".{name}" or name.endswith("embeddings.project")
        ):
            names.append(name)
    return names


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def has_tied_embeddings(model: nn.Module) -> bool:
    """True when the word embeddings are also read as a matrix (an MLM decoder): they stay
    fp32 then."""
    return getattr(model, "mlm", None) is not None


def quantize_model(
    model: nn.Module,
    keep: Iterable[str] = (),
    smooth: dict[str, torch.Tensor] | None = None,
    embeddings: bool = True,
) -> list[str]:
    """Replace the encoder's linear layers (except ``keep``) by :class:`Int8Linear` in place,
    smoothed where ``smooth`` has their name, and the word embeddings by
    :class:`Int8Embedding` unless an MLM decoder shares them. Returns the replaced names."""
    keep = set(keep)
    smooth = smooth or {}
    done = []
    for name in quantizable_linears(model):
        if name in keep:
            continue
        _set(model, name, Int8Linear.from_linear(model.get_submodule(name), smooth.get(name)))
        done.append(name)
    tok = "bert.embeddings.tok"
    if embeddings and not has_tied_embeddings(model):
        emb = model.get_submodule(tok)
        if isinstance(emb, nn.Embedding):
            _set(model, tok, Int8Embedding.from_embedding(emb))
            done.append(tok)
    return done


def prepare_quantized(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Swap in the int8 modules a quantized checkpoint's weight names call for, so that the
    strict load that follows finds every key with its dtype and shape."""
    for key in weights:
        if not key.endswith(".weight_scale"):
            continue
        name = key[: -len(".weight_scale")]
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue  # the strict load names the unexpected key
        if isinstance(module, nn.Linear):
            smooth = f"{name}.smooth" in weights
            new = Int8Linear(
                module.in_features, module.out_features, module.bias is not None, smooth
            )
            _set(model, name, new)
        elif isinstance(module, nn.Embedding):
            _set(model, name, Int8Embedding(*module.weight.shape, module.padding_idx))


Batch = dict[str, Any]


@torch.inference_mode()
def activation_ranges(
    model: nn.Module, batches: Iterable[Batch], names: list[str]
) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of the named linear layers over ``batches`` (real tokens
    only: the padding-free path never feeds padding to a linear layer)."""
    ranges: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:

        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            a = args[0].detach().abs().reshape(-1, args[0].size(-1)).amax(0).float()
            ranges[name] = torch.maximum(ranges[name], a) if name in ranges else a

        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        for b in batches:
            model(b["input_ids"], b.get("token_type_ids"), b.get("attention_mask"))
    finally:
        for h in hooks:
            h.remove()
    return ranges


def smoothing_factors(
    model: nn.Module, ranges: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """SmoothQuant's per-channel factors ``a_j^alpha / w_j^(1 - alpha)`` for each layer."""
    out = {}
    for name, a in ranges.items():
        w = model.get_submodule(name).weight.detach().abs().amax(0).float()  # (in,)
        s = a.clamp(min=1e-5).pow(alpha) / w.clamp(min=1e-5).pow(1 - alpha)
        out[name] = s.clamp(min=1e-5)
    return out


def sensitivity(
    model: nn.Module,
    score: Callable[[nn.Module], float],
    smooth: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """For every quantizable layer: ``score`` of the model with only that layer int8 (the
    distance of its outputs from the fp32 model's; higher = more sensitive)."""
    out = {}
    for name in quantizable_linears(model):
        original = model.get_submodule(name)
        _set(model, name, Int8Linear.from_linear(original, (smooth or {}).get(name)))
        try:
            out[name] = score(model)
        finally:
            _set(model, name, original)
    return out


def quantize_onnx(src: str, dst: str) -> None:
    """ONNX Runtime dynamic int8 quantization of an exported graph (per-channel weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
