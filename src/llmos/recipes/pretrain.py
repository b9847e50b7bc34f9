"""Recipe: pretrain a language model on a corpus (``llmos pretrain``).

config -> the model family's setup (``PRETRAIN_SETUPS`` on ``model.model_type``: tokenizer,
corpus, task, model; each lives in ``llmos.train.tasks``) -> train (the shared loop) -> save ->
report (``report.json``: validation perplexity against a unigram baseline; a GPT's also has
sample generations).

Families: BERT/RoBERTa encoders learn masked LM (+ next-sentence prediction,
``llmos.train.tasks.mlm``); GPT decoders learn next-token prediction on packed blocks
(``llmos.train.tasks.clm``); XLNet learns permutation LM (``llmos.train.tasks.plm``); CLIP
aligns a ViT trained from scratch with a frozen text encoder on the emoji images
(``llmos.train.tasks.clip``; no text corpus, so no unigram baseline: its report is the
held-out retrieval of its last validation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmos.config.run import PretrainConfig
from llmos.files import atomic_write_json
from llmos.train.loop import FitResult, fit
from llmos.train.metrics import unigram_perplexity
from llmos.train.runs import PretrainSetup, start_run
from llmos.train.tasks.clip import setup_clip_pretraining
from llmos.train.tasks.clm import setup_clm_pretraining
from llmos.train.tasks.mlm import setup_mlm_pretraining
from llmos.train.tasks.plm import setup_plm_pretraining

log = logging.getLogger("llmos.recipes")

# model.model_type -> the setup of that model family: the one place it is dispatched on.
PRETRAIN_SETUPS: dict[str, Callable[[PretrainConfig], PretrainSetup]] = {
    "bert": setup_mlm_pretraining,
    "roberta": setup_mlm_pretraining,
    "gpt": setup_clm_pretraining,
    "xlnet": setup_plm_pretraining,
    "clip": setup_clip_pretraining,
}


@dataclass
class PretrainResult(FitResult):
    """Where the run and its final checkpoint are, and its report (empty on other DDP ranks)."""

    report: dict[str, Any] = field(default_factory=dict)

    def format_report(self) -> str:
        """What ``llmos pretrain`` prints: checkpoint, loss plot and the last validation."""
        lines = [f"checkpoint: {self.checkpoint}", f"loss plot:  {self.run_dir / 'loss.png'}"]
        if self.last_valid:
            valid = ", ".join(f"{k}={v:.4g}" for k, v in self.last_valid.items())
            lines.append(f"validation: {valid}")
        return "\n".join(lines)


def pretrain(cfg: PretrainConfig, resume: bool = False) -> PretrainResult:
    """Pretrain a BERT encoder, a GPT decoder, an XLNet or a CLIP (``model.model_type``); returns
    where the run and its final checkpoint are, with the report also written to
    ``report.json``."""
    setup = PRETRAIN_SETUPS[cfg.model.model_type](cfg)
    cfg = setup.cfg
    run_dir = start_run(cfg)
    model = setup.build()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters; %s", n_params / 1e6, setup.describe)
    fitted = fit(
        model,
        setup.task,
        cfg.train,
        cfg.optim,
        run_dir,
        model_config=cfg.model,
        tokenizer=setup.tokenizer,
        task_meta=setup.meta,
        resume=resume,
        title=cfg.name,
    )
    result = PretrainResult(**vars(fitted))
    if not result.is_main:
        return result
    result.report = {"valid": result.last_valid, "parameters": n_params, "steps": result.step}
    if setup.train is not None and setup.tokenizer is not None:
        assert setup.valid_targets is not None
        vocab = setup.tokenizer.get_vocab_size()
        result.report["unigram_perplexity"] = unigram_perplexity(
            setup.train.ids, setup.valid_targets, vocab
        )
        result.report["train_tokens"] = setup.train.num_tokens
    if setup.extra_report is not None:
        result.report |= setup.extra_report(fitted)
    atomic_write_json(run_dir / "report.json", result.report)
    if "unigram_perplexity" in result.report:
        log.info(
            "validation perplexity %.2f; unigram baseline %.2f",
            result.last_valid.get("perplexity", float("nan")),
            result.report["unigram_perplexity"],
        )
    return result
