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


# Names the tiny WordPiece tokenizer knows (anything else reads as [UNK] to it).
EMOJI_EN = ("book", "big", "city", "read", "students", "like", "music", "market", "grew", "we")
EMOJI_ZH = "习人今介他们保公农化历去参发史司喜在场城"


def save_tiny_text_tower(tokenizer: Path, out: Path, seed: int = 0) -> Path:
    """A 1-layer, 32-wide random-init encoder with E5's ``query: ``/``passage: `` prefixes,
    saved as an embedding checkpoint at ``out``: a CLIP text tower."""
    import torch

    from llmos.checkpoint.io import save_checkpoint
    from llmos.checkpoint.task import Embedding
    from llmos.config.model import BertConfig
    from llmos.models.bert import BertForPreTraining
    from llmos.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        max_position=64,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(seed)
    spec = Embedding(query_prefix="query: ", passage_prefix="passage: ")
    return save_checkpoint(out, BertForPreTraining(cfg), cfg, tok, spec)


def fake_emoji_home(
    home: Path, n: int = 12, styles: tuple[str, ...] = ("apple", "twitter")
) -> Path:
    """``home/emoji/`` in the layout ``llmos data prepare --with-emoji`` writes: ``n`` emoji
    rows (the last without a Chinese name, as a flag) and per style an npz of 64 x 64 RGBA
    images, each a 4 x 4 grid of random colours and alphas (0, 128, 255), so compositing on
    white matters. Returns ``home``."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        unified = f"1F{0x600 + i:03X}"
        en = f"{EMOJI_EN[i % 10]} {EMOJI_EN[(i // 10 + i + 3) % 10]}"
        zh = EMOJI_ZH[i % 20] + EMOJI_ZH[(i + 5) % 20]
        cldr = i < n - 1
        rows.append(
            {
                "unified": unified,
                "emoji": chr(int(unified, 16)),
                "base": unified,
                "skin_tones": [],
                "category": ("Smileys & Emotion", "Animals & Nature")[i % 2],
                "name": f"{en} market",
                "en_name": en if cldr else None,
                "en_keywords": [EMOJI_EN[i % 10]] if cldr else [],
                "zh_name": zh if cldr else None,
                "zh_keywords": [EMOJI_ZH[i % 20]] if cldr else [],
                "images": list(styles),
            }
        )
    out = home / "emoji"
    (out / "images").mkdir(parents=True)
    (out / "emoji.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    rgb = rng.integers(0, 256, size=(n, 4, 4, 3))
    alpha = rng.choice([0, 128, 255], size=(n, 4, 4, 1))
    codes = np.array([r["unified"] for r in rows])
    for s, style in enumerate(styles):
        grid = np.concatenate([np.clip(rgb + 20 * s, 0, 255), alpha], -1)
        pixels = grid.repeat(16, 1).repeat(16, 2).astype(np.uint8)  # (n, 64, 64, 4)
        np.savez_compressed(out / "images" / f"{style}.npz", unified=codes, pixels=pixels)
    return home


def save_tiny_clip(
    out: Path,
    text_tower: Path,
    *,
    text_encoder: str | None = None,
    meta: dict | None = None,
    seed: int = 0,
) -> Path:
    """A random-init CLIP checkpoint (16 px images, 4 px patches, a 2-layer 32-wide ViT,
    16-dim space) over ``text_tower`` (32-dim), as ``llmos pretrain`` writes one: config.json
    naming ``text_encoder`` (default: the tower's path), weights, and task.json with the
    tower's digest unless ``meta`` replaces it."""
    import torch

    from llmos.checkpoint.digest import weights_digest
    from llmos.checkpoint.io import save_checkpoint
    from llmos.config.model import CLIPConfig, ViTConfig
    from llmos.models.clip import CLIPModel

    vision = ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        pooler=False,
    )
    cfg = CLIPConfig(
        vision=vision,
        text_encoder=text_encoder or str(text_tower),
        text_kind="query",
        text_dim=32,
        projection_dim=16,
    )
    torch.manual_seed(seed)
    task = {
        "task": "clip",
        "text_encoder": cfg.text_encoder,
        "text_kind": "query",
        "text_encoder_digest": weights_digest(text_tower),
        "train_styles": ["apple"],
        "eval_style": "twitter",
    }
    return save_checkpoint(out, CLIPModel(cfg), cfg, None, meta if meta is not None else task)
