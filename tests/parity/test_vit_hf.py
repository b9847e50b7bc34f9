"""The Vision Transformer against Hugging Face ``ViTModel`` on identical random weights, fp32,
eval mode, to 1e-5: last hidden state, [CLS] and the pooler; both spellings of HF's keys; the
config read from HF's; shapes and a clear error for a wrong image size."""

from __future__ import annotations

import pytest
import torch

from llmos.checkpoint.hf_vit import vit_config_from_hf, vit_from_hf, vit_to_hf
from llmos.checkpoint.io import load_state_dict_strict
from llmos.config.model import ViTConfig
from llmos.errors import CheckpointError, ConfigError
from llmos.models.vision import ViTModel

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
HF_SIZES = {
    "image_size": 32,
    "patch_size": 8,
    "num_channels": 3,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
}


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial LayerNorms and biases, not just their init values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def pair(pooler: bool = True) -> tuple[ViTModel, torch.nn.Module]:
    torch.manual_seed(0)
    hf_cfg = transformers.ViTConfig(**HF_SIZES)
    hf = perturbed(transformers.ViTModel(hf_cfg, add_pooling_layer=pooler))
    cfg = vit_config_from_hf(hf_cfg.to_dict(), "tiny", pooler=pooler)
    ours = ViTModel(cfg).eval()
    load_state_dict_strict(ours, vit_from_hf(hf.state_dict()))
    return ours, hf


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL), (got - expected).abs().max()


def images(n: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, 32, 32)


def test_hidden_states_cls_and_pooler_equal_hf() -> None:
    ours, hf = pair()
    x = images()
    with torch.no_grad():
        expected = hf(pixel_values=x)
        got = ours(x)
    close(got.hidden, expected.last_hidden_state)
    close(got.cls, expected.last_hidden_state[:, 0])
    assert got.pooled is not None
    close(got.pooled, expected.pooler_output)


def test_without_the_pooler_too() -> None:
    ours, hf = pair(pooler=False)
    assert ours.pooler is None
    x = images()
    with torch.no_grad():
        expected = hf(pixel_values=x)
        got = ours(x)
    close(got.hidden, expected.last_hidden_state)
    assert got.pooled is None and expected.pooler_output is None


def test_weights_go_back_to_hf_in_both_spellings() -> None:
    ours, hf = pair()
    back = vit_to_hf(ours.state_dict())
    hf_sd = hf.state_dict()
    assert back.keys() == hf_sd.keys()
    assert all(torch.equal(back[k], hf_sd[k]) for k in hf_sd)
    # transformers 4's names (every ViT on the Hub) import to the same weights.
    legacy = vit_to_hf(ours.state_dict(), legacy=True)
    assert "encoder.layer.1.attention.attention.query.weight" in legacy
    assert "encoder.layer.0.intermediate.dense.bias" in legacy
    assert not any(k.startswith("layers.") for k in legacy)
    again = vit_from_hf(legacy)
    assert again.keys() == ours.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in ours.state_dict().items())


def test_unknown_and_incomplete_weights_are_named() -> None:
    _, hf = pair()
    sd = hf.state_dict()
    with pytest.raises(CheckpointError, match="unknown Hugging Face ViT weight 'classifier"):
        vit_from_hf({**sd, "classifier.weight": torch.zeros(2, 32)})
    del sd["layers.1.attention.v_proj.bias"]
    with pytest.raises(CheckpointError, match=r"layer 1: attention bias lacks \['v_proj'\]"):
        vit_from_hf(sd)


def test_unsupported_hf_options_are_refused() -> None:
    cfg = transformers.ViTConfig(**HF_SIZES, qkv_bias=False).to_dict()
    with pytest.raises(CheckpointError, match="qkv_bias False is not supported"):
        vit_config_from_hf(cfg, "x")
    cfg = transformers.ViTConfig(**HF_SIZES, hidden_act="relu").to_dict()
    with pytest.raises(CheckpointError, match="hidden_act 'relu'"):
        vit_config_from_hf(cfg, "x")


def test_shapes() -> None:
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4)
    assert cfg.num_patches == 16 and cfg.head_size == 8
    out = ViTModel(cfg).eval()(torch.rand(5, 3, 32, 32))
    assert out.hidden.shape == (5, 1 + 16, 32)
    assert out.cls.shape == (5, 32) and out.pooled is not None and out.pooled.shape == (5, 32)


def test_every_weight_gets_a_gradient_in_training() -> None:
    cfg = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2)
    model = ViTModel(cfg).train()
    out = model(torch.rand(2, 3, 16, 16))
    assert out.pooled is not None
    out.pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_wrong_image_size_or_channel_count_is_a_clear_error() -> None:
    model = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_heads=4))
    with pytest.raises(ValueError, match="image size 64x64 does not match the model's 32x32"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        model(torch.rand(1, 4, 32, 32))  # RGBA given to an RGB model


def test_config_errors_name_the_field() -> None:
    with pytest.raises(
        ConfigError, match=r"image_size \(30\) must be divisible by model.patch_size"
    ):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(
        ConfigError, match=r"hidden_size \(30\) must be divisible by model.num_heads"
    ):
        ViTConfig(hidden_size=30, num_heads=4)
