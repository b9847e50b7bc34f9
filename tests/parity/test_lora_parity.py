"""LoRA adapters against PEFT on identical random-init tiny GPT-2s: the same adapter tensors
give the same logits, and an adapter saved by llmos loads in ``peft.PeftModel`` unchanged."""

from __future__ import annotations

import pytest
import torch

from llmos.checkpoint.hf import gpt2_from_hf, hf_gpt2_config
from llmos.config.model import GPTConfig
from llmos.models import lora
from llmos.models.gpt import GPT

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

CFG = GPTConfig(
    vocab_size=97,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position=40,
    dropout=0.0,
    attention_dropout=0.0,
)
LCFG = lora.LoraConfig(rank=4, alpha=8.0, targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc"))


def _pair() -> tuple[GPT, torch.nn.Module]:
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_gpt2_config(CFG)).eval()
    ours = GPT(CFG).eval()
    ours.load_state_dict(gpt2_from_hf(hf.state_dict(), CFG), strict=False)
    return ours, hf


def _randomise(model: GPT, name: str) -> None:
    """B starts at zero (a fresh adapter is the identity); give it values to compare."""
    with torch.no_grad():
        for module in lora.lora_modules(model).values():
            module.lora_B[name].weight.normal_(0.0, 0.2)


def test_saved_adapter_loads_in_peft_with_equal_logits(tmp_path) -> None:
    ours, hf = _pair()
    lora.add_adapter(ours, "style", LCFG)
    _randomise(ours, "style")
    lora.save_adapter(tmp_path / "adapter", ours, "style", LCFG, base="tiny")
    ids = torch.randint(0, CFG.vocab_size, (2, 11))
    with torch.no_grad():
        base_logits = hf(ids).logits
        with lora.use(ours, "style"):
            got, _ = ours(ids)
        wrapped = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
        expected = wrapped(input_ids=ids).logits
    assert not torch.allclose(expected, base_logits, atol=1e-3)  # the adapter changes things
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_peft_adapter_loads_here_with_equal_logits(tmp_path) -> None:
    ours, hf = _pair()
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["attn.c_attn", "mlp.c_proj"], fan_in_fan_out=True
    )
    wrapped = peft.get_peft_model(hf, config)
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.2)
    wrapped.save_pretrained(str(tmp_path / "peft"))
    lora.load_adapter(ours, tmp_path / "peft", "theirs")
    assert not any(m.training for m in ours.modules())  # still an eval-mode model
    ids = torch.randint(0, CFG.vocab_size, (3, 9))
    with torch.no_grad():
        expected = wrapped.eval()(input_ids=ids).logits
        with lora.use(ours, "theirs"):
            got, _ = ours(ids)  # no grad, eval: the cached-transpose path of models/gpt.py
        base, _ = ours(ids)  # outside the block: the base model
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(base, got, atol=1e-3)


def test_mixed_batch_rows_match_each_adapter_alone() -> None:
    ours, _ = _pair()
    lora.add_adapter(ours, "ann", LCFG)
    lora.add_adapter(ours, "bob", lora.LoraConfig(rank=2, alpha=3.0, targets=LCFG.targets))
    for name in ("ann", "bob"):  # two ranks: the gathered path pads the smaller one
        _randomise(ours, name)
    ids = torch.randint(0, CFG.vocab_size, (3, 7))
    with torch.no_grad():
        alone = {}
        for name in ("ann", "bob", None):
            with lora.use(ours, name):
                alone[name] = ours(ids)[0]
        with lora.use(ours, ["bob", None, "ann"]):
            mixed, _ = ours(ids)
        # Two rows per prompt (as beams or samples lay them out): rows 0-1 prompt 0, ...
        with lora.use(ours, ["ann", "bob", "ann"]):
            doubled, _ = ours(ids.repeat_interleave(2, dim=0))
    assert torch.allclose(mixed[0], alone["bob"][0], atol=1e-5)
    assert torch.allclose(mixed[1], alone[None][1], atol=1e-5)
    assert torch.allclose(mixed[2], alone["ann"][2], atol=1e-5)
    for row, name in enumerate(["ann", "ann", "bob", "bob", "ann", "ann"]):
        assert torch.allclose(doubled[row], alone[name][row // 2], atol=1e-5)
    # With gradients on (training), a pass per adapter over its rows: the same numbers.
    with lora.use(ours, ["bob", None, "ann"]):
        grouped, _ = ours(ids)
    assert torch.allclose(grouped.detach(), mixed, atol=1e-5)
