"""LoRA adapter training on a user's texts: it learns (held-out perplexity falls below the
base's), the base is never written, checkpoints hold the adapter alone, and a run cut off by
an error resumes to exactly the adapter an uninterrupted run ends with."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from llmos.checkpoint.digest import weights_digest
from llmos.errors import DataError
from llmos.models import lora
from llmos.train import adapter as A

# A user's "style": sentences built from a few words of their own.
WORDS = ["却说", "曹操", "引兵", "大败", "玄德", "关公", "张飞", "于是", "次日", "城下"]


def user_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + "。" for _ in range(n)]


@pytest.fixture()
def base(tiny_gpt: Path) -> Path:
    """The tiny GPT (conftest.save_tiny_gpt): trained on, never written."""
    return tiny_gpt


def run(steps: int = 30, eval_every: int = 10) -> A.AdapterRun:
    return A.AdapterRun(
        lora=lora.LoraConfig(rank=4, alpha=8.0),
        max_steps=steps,
        batch_size=4,
        block=32,
        lr=1e-2,
        eval_every=eval_every,
        progress=False,
    )


def test_adapter_learns_the_users_text_and_leaves_the_base(base: Path, tmp_path: Path) -> None:
    digest = weights_digest(base)
    result = A.train_adapter(base, user_texts(120, 0), tmp_path / "run", run())
    assert result.step == 30
    assert result.valid["perplexity"] < 0.5 * result.base_valid["perplexity"]
    assert weights_digest(base) == digest
    # The adapter directory is a PEFT adapter, a small fraction of the base.
    files = sorted(p.name for p in result.adapter.iterdir())
    assert files == [lora.CONFIG_FILE, lora.WEIGHTS_FILE, lora.INFO_FILE]
    cfg, state = lora.read_adapter(result.adapter)
    assert cfg.rank == 4 and all(k.startswith(lora.PREFIX) for k in state)
    assert sum(t.numel() for t in state.values()) == result.parameters
    assert result.parameters < 0.1 * result.base_parameters
    info = lora.read_info(result.adapter)
    assert info["base_digest"] == digest and info["perplexity"] == result.valid["perplexity"]


def test_cut_off_run_resumes_to_the_same_adapter(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = user_texts(120, 1)
    straight = A.train_adapter(base, texts, tmp_path / "straight", run(steps=25, eval_every=5))

    calls = {"n": 0}
    real_loss = A.CausalLMTask.loss

    def crash_at_step_13(self, model, batch, totals):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt  # as a Ctrl-C would
        return real_loss(self, model, batch, totals)

    monkeypatch.setattr(A.CausalLMTask, "loss", crash_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        A.train_adapter(base, texts, tmp_path / "cut", run(steps=25, eval_every=5))
    monkeypatch.setattr(A.CausalLMTask, "loss", real_loss)
    steps = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert steps == ["step-0000010"]  # keep_last 1: the newest complete checkpoint
    resumed = A.train_adapter(
        base, texts, tmp_path / "cut", run(steps=25, eval_every=5), resume=True
    )
    a, b = lora.read_adapter(straight.adapter)[1], lora.read_adapter(resumed.adapter)[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_too_little_text_is_a_clear_error(base: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least two blocks"):
        A.train_adapter(base, ["曹操。"], tmp_path / "few", run())
