"""The registry: names and kinds of the checkpoints under a models directory, loading on first
use, and a memory budget kept by unloading the least recently used models."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import weakref
from pathlib import Path

import pytest

from llmos.errors import LlmosError
from llmos.serve.catalog import UnknownModel, scan
from llmos.serve.registry import Registry, model_bytes
from llmos.serve.settings import ServeSettings


def test_scan_names_kinds_and_indexes(models_dir: Path) -> None:
    models, indexes = scan(models_dir)
    assert sorted(models) == ["cls", "emb", "gpt", "mlm", "movielens", "ner"]
    kinds = {n: (m.task, m.capabilities) for n, m in models.items()}
    assert kinds == {
        "cls": ("classification", ("classify", "embed")),
        "ner": ("tagging", ("tag", "embed")),
        "mlm": ("fill-mask", ("fill-mask", "embed")),
        "emb": ("embedding", ("embed", "fill-mask")),  # it carries BERT's MLM head too
        "gpt": ("generation", ("generate",)),
        "movielens": ("recommendation", ("apps/recommend",)),
    }
    assert models["cls"].labels == ["neg", "pos"]
    assert (
        models["cls"].size_bytes == (models_dir / "cls/checkpoint/model.safetensors").stat().st_size
    )
    assert indexes == {"docs": models_dir / "docs"}


def test_a_broken_checkpoint_is_skipped_with_a_warning(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir / "ner", root / "ner")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, "llmos.serve"):
        models, _ = scan(root)
    assert list(models) == ["ner"]
    assert "broken" in caplog.text


def test_loading_past_the_budget_unloads_the_least_recently_used(models_dir: Path) -> None:
    async def main() -> None:
        reg = Registry(ServeSettings(models_dir=models_dir, memory_budget_mb=1))
        reg.rescan()
        cls = await reg.get("cls")
        one = cls.nbytes
        assert one == model_bytes(cls.pipe) > 0
        # A budget of two and a half of these models: the third load must evict one.
        reg.budget = int(2.5 * one)
        ner = await reg.get("ner")
        await reg.get("cls")  # cls is now the most recently used; ner the least
        ref = weakref.ref(ner.pipe)
        del ner
        await reg.get("mlm")
        assert list(reg.loaded) == ["cls", "mlm"]
        assert reg.used_bytes <= reg.budget and reg.evictions == 1
        gc.collect()
        assert ref() is None  # the evicted model's memory is really released
        again = await reg.get("ner")  # loads again on use, evicting the oldest (cls)
        assert again.pipe is not None and list(reg.loaded) == ["mlm", "ner"]
        assert reg.used_bytes <= reg.budget
        await reg.close()
        assert not reg.loaded

    asyncio.run(main())


def test_unknown_names_and_models_over_the_whole_budget(models_dir: Path) -> None:
    async def main() -> None:
        reg = Registry(ServeSettings(models_dir=models_dir, memory_budget_mb=0.01))
        reg.rescan()
        with pytest.raises(UnknownModel, match=r"no model named 'nope'.*cls"):
            await reg.get("nope")
        with pytest.raises(LlmosError, match="more than the server's whole memory budget"):
            await reg.get("cls")
        assert not reg.loaded

    asyncio.run(main())


def test_precision_auto_casts_the_encoders_where_the_cpu_computes_bf16(
    models_dir: Path,
) -> None:
    """``llmos serve --precision auto``: an encoder's weights are bf16 on a CPU with native
    bf16 and fp32 elsewhere; a forced bf16 (which GPTs refuse) is not a server setting."""
    import torch

    from llmos.errors import ConfigError
    from llmos.models.precision import bf16_supported

    async def main() -> None:
        reg = Registry(ServeSettings(models_dir=models_dir, precision="auto"))
        reg.rescan()
        loaded = await reg.get("cls")
        want = torch.bfloat16 if bf16_supported("cpu") else torch.float32
        assert next(loaded.pipe.model.parameters()).dtype == want
        gpt = await reg.get("gpt")
        assert next(gpt.pipe.model.parameters()).dtype == torch.float32

    asyncio.run(main())
    with pytest.raises(ConfigError, match="precision is out of range: bf16"):
        ServeSettings(models_dir=models_dir, precision="bf16")


def test_an_embedding_encoder_fills_blanks_only_with_an_mlm_head(
    models_dir: Path, tmp_path: Path
) -> None:
    """An embedding checkpoint that carries an MLM head (e5-zh-mlm) also serves fill-mask; one
    without (a real e5 import, heads none) only embeds."""
    import json

    root = tmp_path / "models"
    shutil.copytree(models_dir / "emb", root / "with-head")
    shutil.copytree(models_dir / "emb", root / "bare")
    config = json.loads((root / "bare" / "config.json").read_text())
    config |= {"heads": "none", "pooler": False}
    (root / "bare" / "config.json").write_text(json.dumps(config))
    models, _ = scan(root)
    assert models["with-head"].capabilities == ("embed", "fill-mask")
    assert models["bare"].capabilities == ("embed",)


def test_a_clip_checkpoint_is_listed_and_loaded_with_its_text_tower(
    tiny_tokenizer: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CLIP checkpoint (no tokenizer; its text tower elsewhere) is listed as task ``clip``,
    its size counting the tower it loads; the registry loads it as an ImagePipeline with the
    server's image limits and emoji home, the tower at once, and counts both in the memory
    budget. A tower that cannot be found leaves the image half served (with a warning)."""
    from tiny_models import save_tiny_clip, save_tiny_text_tower

    from llmos.inference.image import ImagePipeline

    tower = save_tiny_text_tower(tiny_tokenizer, tmp_path / "e5")
    clip = save_tiny_clip(tmp_path / "models" / "clip-emoji" / "checkpoint", tower)
    save_tiny_clip(tmp_path / "models" / "lost", tower, text_encoder="runs/nowhere")
    models, _ = scan(tmp_path / "models")
    entry = models["clip-emoji"]
    assert (entry.task, entry.model_type) == ("clip", "clip")
    assert entry.capabilities == ("embed", "classify", "images/describe", "images/search")
    weights = [p / "model.safetensors" for p in (clip, tower)]
    assert entry.size_bytes == sum(w.stat().st_size for w in weights)
    settings = ServeSettings(
        models_dir=tmp_path / "models",
        max_image_bytes=1000,
        max_image_pixels=2000,
        emoji_home=tmp_path / "home",
    )

    async def main() -> None:
        reg = Registry(settings)
        reg.rescan()
        m = await reg.get("clip-emoji")
        pipe = m.pipe
        assert isinstance(pipe, ImagePipeline)
        assert (pipe.max_bytes, pipe.max_pixels, pipe.emoji_home) == (1000, 2000, tmp_path / "home")
        assert pipe._tower is not None  # loaded with the model, and counted
        assert m.nbytes == model_bytes(pipe) + model_bytes(pipe.text_tower)
        with caplog.at_level(logging.WARNING, logger="llmos.serve"):
            lost = await reg.get("lost")
        assert lost.nbytes == model_bytes(lost.pipe)
        assert "lost: its text tower is not loaded" in caplog.text
        await reg.close()

    asyncio.run(main())
