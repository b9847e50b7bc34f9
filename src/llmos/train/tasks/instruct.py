"""Instruction tuning of a GPT (the supervised step of InstructGPT): held-out batches, answer
quality (exact match and answer F1 of greedy answers), and the fine-tuning setup built from a
:class:`~llmos.config.run.FinetuneConfig` ({instruction, input, output} JSONL, the prompt
template, loss on response tokens only; the report compares the base model and the tuned one,
with generations side by side)."""

from __future__ import annotations

import logging
from typing import Any

from llmos.checkpoint.io import load_state_dict_strict
from llmos.config.run import FinetuneConfig
from llmos.data.clm import (
    PROMPT_TEMPLATE,
    PROMPT_TEMPLATE_INPUT,
    InstructionBatches,
    encode_instructions,
    format_prompt,
    pad_pairs,
)
from llmos.data.datasets import dataset_files, warn_skipped
from llmos.data.readers import Instruction, read_instructions
from llmos.errors import CheckpointError
from llmos.inference.generator import GeneratorPipeline
from llmos.inference.load import load_pipeline
from llmos.models.gpt import GPT
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult
from llmos.train.metrics import answer_f1, exact_match
from llmos.train.runs import FinetuneSetup, Init
from llmos.train.tasks.clm import CausalLMTask, eos_id_of, lm_metrics

log = logging.getLogger("llmos.train")

EVAL_BATCH = 16
SHOWN_EXAMPLES = 8  # generations kept in the report, per model


def pair_batches(ids: list, targets: list, pad_id: int, size: int) -> list[dict[str, Any]]:
    """Padded batches of ``size`` (ids, targets) pairs, in order."""
    return [
        pad_pairs(ids[i : i + size], targets[i : i + size], pad_id)
        for i in range(0, len(ids), size)
    ]


def answer_quality(
    pipe: GeneratorPipeline, examples: list[Instruction], max_new_tokens: int = 48
) -> tuple[dict[str, Any], list[str]]:
    """Greedy answers to held-out instructions, scored against the references: exact match
    and answer F1 (CJK characters / words), overall and per ``source``. An answer gets at most
    ``max_new_tokens``, fewer when its prompt leaves less room in the context window."""
    window = pipe.config.max_position
    prompts = [format_prompt(e.instruction, e.input) for e in examples]
    lengths = [len(e.ids) for e in pipe.tokenizer.encode_batch(prompts, add_special_tokens=False)]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)  # similar lengths together
    answers = [""] * len(prompts)
    for i in range(0, len(order), EVAL_BATCH):
        idx = order[i : i + EVAL_BATCH]
        budget = min(max_new_tokens, window - max(lengths[j] for j in idx))
        if budget < 1:
            continue  # prompts that fill the window get no answer (scored as empty)
        # Plain greedy, pinned: GenerationConfig's defaults for interactive use (repetition
        # penalty 1.1, no repeated trigram) would change the answers, and the exact-match and
        # F1 numbers in docs/BENCHMARKS.md were measured without them.
        outs = pipe.generate(
            [prompts[j] for j in idx],
            raw=True,
            max_new_tokens=budget,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        for j, a in zip(idx, outs, strict=True):
            answers[j] = a
    groups: dict[str, list[tuple[str, str]]] = {"all": []}
    for e, a in zip(examples, answers, strict=True):
        groups["all"].append((a, e.output))
        if e.source:
            groups.setdefault(e.source, []).append((a, e.output))
    scores = {
        name: {
            "exact_match": sum(exact_match(a, r) for a, r in pairs) / len(pairs),
            "answer_f1": sum(answer_f1(a, r) for a, r in pairs) / len(pairs),
            "examples": len(pairs),
        }
        for name, pairs in groups.items()
    }
    return scores, answers


def setup_instruct(cfg: FinetuneConfig, init: Init) -> FinetuneSetup:
    """The splits encoded as prompt + response + end-of-text (prompt targets ignored), the task,
    the GPT (all its weights loaded from ``init``), and a report on the test split (valid
    without one): response-token loss and answer quality of the base and the tuned model."""
    if init.config.model_type != "gpt":
        raise CheckpointError(
            f"{init.path}: task instruct needs a GPT checkpoint (model_type gpt), got "
            f"{init.config.model_type!r}"
        )
    eos = eos_id_of(init.tokenizer, f"{init.path}/tokenizer.json")
    pad = special_ids(init.tokenizer).get("pad")
    pad_id = pad if pad is not None else eos
    files = dataset_files(cfg.data.dataset)
    read = {s: read_instructions(f, cfg.data.skip_bad_rows) for s, f in files.items()}
    warn_skipped(files, read)
    max_length = min(cfg.data.max_length, init.config.max_position)
    enc = {}
    for split, res in read.items():
        ids, targets, dropped = encode_instructions(res.rows, init.tokenizer, eos, max_length)
        if dropped:
            log.warning(
                "%s: %d examples dropped: their prompt alone fills max_length %d",
                files[split],
                dropped,
                max_length,
            )
        enc[split] = (ids, targets)
    bs = cfg.train.micro_batch_size or cfg.train.batch_size
    task = CausalLMTask(
        InstructionBatches(*enc["train"], pad_id, cfg.train.batch_size, cfg.train.seed),
        pair_batches(*enc["valid"], pad_id, bs)[: cfg.train.eval_batches],
    )
    meta = {
        "task": "instruct",
        "template": PROMPT_TEMPLATE,
        "template_with_input": PROMPT_TEMPLATE_INPUT,
        "max_length": max_length,
    }

    def report(result: FitResult) -> dict[str, Any]:
        out: dict[str, Any] = {"best": result.best, "train_examples": len(enc["train"][0])}
        split = "test" if "test" in enc else "valid"
        held_out = pair_batches(*enc[split], pad_id, bs)
        tuned = load_pipeline(result.checkpoint)
        base = load_pipeline(init.path)
        rows = read[split].rows
        out["split"] = split
        for name, pipe in (("base", base), ("tuned", tuned)):
            response = lm_metrics(pipe.model, held_out)
            quality, answers = answer_quality(pipe, rows)
            out[name] = {"response": response, "quality": quality}
            out.setdefault("examples", [{} for _ in rows[:SHOWN_EXAMPLES]])
            for shown, e, a in zip(out["examples"], rows, answers, strict=False):
                shown |= {"instruction": e.instruction, "input": e.input, "reference": e.output}
                shown[name] = a
        log.info(
            "%s response-token loss: base %.3f -> tuned %.3f; answer F1 %.3f -> %.3f",
            split,
            out["base"]["response"]["loss"],
            out["tuned"]["response"]["loss"],
            out["base"]["quality"]["all"]["answer_f1"],
            out["tuned"]["quality"]["all"]["answer_f1"],
        )
        return out

    config = init.config
    return FinetuneSetup(
        task,
        lambda: GPT(config),
        meta,
        report,
        load=lambda model, weights, _path: load_state_dict_strict(model, weights),
    )
