"""Tiny random-init models that tests in several directories build alike (import as
``tiny_models``: the tests directory is on the import path)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_gpt(bpe: Path, out: Path) -> Path:
    """A 2-layer, 32-wide random-init GPT (seeded) over the BPE ``bpe``, saved as a checkpoint
    at ``out``. Its word embeddings are at a trained model's scale (std 0.5, not 0.02): the
    logits can move away from uniform, so that a LoRA adapter trained on it changes its output
    (at 0.02, ln_f's unit-scale output times the embeddings leaves every logit near 0)."""
    import torch

    from llmos.checkpoint.io import save_checkpoint
    from llmos.config.model import GPTConfig
    from llmos.models.gpt import GPT
    from llmos.text.tokenizer import load_tokenizer

    tok = load_tokenizer(bpe)
    cfg = GPTConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, 0.5)
    return save_checkpoint(out, model, cfg, tok)
