"""Greedy generation speed: llmos against Hugging Face ``generate``, same weights and prompts.

    python bench/generate.py [--checkpoint runs/gpt-zh/checkpoint] [--new-tokens 128]
                             [--batch-sizes 1 8] [--prompt-tokens 32] [--repeats 3]

Without --checkpoint a GPT of the shipped gpt-zh size (hidden 256, 4 layers, 8,000 tokens,
window 256) with random weights is used. Our weights are copied into ``GPT2LMHeadModel``; the
prompts are the first documents of the prepared Chinese validation corpus, cut to
--prompt-tokens tokens. Both sides decode greedily for exactly --new-tokens tokens (no
end-of-text stop) and must produce the same tokens, which is checked. Three ways are timed:

- hf:       ``model.generate(do_sample=False, num_beams=1, use_cache=True)``;
- llmos:    :func:`llmos.inference.generate.generate_ids` (KV cache);
- no cache: llmos recomputing the whole sequence at every step (what the cache saves).

Reported: new tokens per second (batch x new tokens / seconds, median of --repeats runs after
a warm-up; hf and llmos timed in turns) and the ratios llmos/hf and cache/no-cache.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from llmos.checkpoint.hf import gpt2_to_hf, hf_gpt2_config
from llmos.checkpoint.io import load_state_dict_strict, read_checkpoint
from llmos.config.model import GPTConfig
from llmos.data.corpus import read_documents
from llmos.data.datasets import resolve_corpus, resolve_tokenizer
from llmos.inference.generate import GenerationConfig, generate_ids, left_pad
from llmos.models.gpt import GPT
from llmos.text.sentences import join_sentences
from llmos.text.tokenizer import load_tokenizer


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, object]]:
    """Median seconds and last output of each function, timed in turns (a, b, a, b, ...)
    after one warm-up each, so that a slow phase of the machine hits both sides alike."""
    outs: list[object] = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(ts), out) for ts, out in zip(times, outs, strict=True)]


@torch.inference_mode()
def no_cache_greedy(model: GPT, prompts: list[list[int]], new: int) -> list[list[int]]:
    ids, mask, positions = left_pad(prompts, 0, torch.device("cpu"))
    for _ in range(new):
        logits, _ = model(ids, mask, None, positions)
        token = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], 1)
        mask = torch.cat([mask, torch.ones_like(token)], 1)
        positions = torch.cat([positions, positions[:, -1:] + 1], 1)
    return ids[:, -new:].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="a GPT checkpoint (default: random gpt-zh-sized)")
    ap.add_argument("--corpus", default="zh")
    ap.add_argument("--tokenizer", default="bpe-zh", help="without --checkpoint")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-no-cache", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GPT2LMHeadModel

    if args.checkpoint:
        ckpt = read_checkpoint(args.checkpoint)
        cfg, tok = ckpt.config, ckpt.tokenizer
        model = GPT(cfg).eval()
        load_state_dict_strict(model, ckpt.weights())
    else:
        tok = load_tokenizer(resolve_tokenizer(args.tokenizer))
        cfg = GPTConfig(vocab_size=tok.get_vocab_size(), dropout=0.0, attention_dropout=0.0)
        torch.manual_seed(0)
        model = GPT(cfg).eval()
    hf = GPT2LMHeadModel(hf_gpt2_config(cfg)).eval()
    missing, unexpected = hf.load_state_dict(gpt2_to_hf(model.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("attn.bias") for k in missing), (missing, unexpected)
    docs = read_documents(resolve_corpus(args.corpus) / "valid.txt", max(args.batch_sizes) * 4)
    prompts = [
        ids[: args.prompt_tokens]
        for ids in (tok.encode(join_sentences(d), add_special_tokens=False).ids for d in docs)
        if len(ids) >= args.prompt_tokens
    ]
    new = args.new_tokens
    print(
        f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"prompt {args.prompt_tokens} tokens, {new} new tokens, greedy, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(
        f"{'batch':>5} {'hf tok/s':>10} {'llmos tok/s':>12} {'x hf':>6} "
        f"{'no-cache tok/s':>15} {'cache x':>8} {'same tokens':>12}"
    )
    # Plain greedy, as hf.generate below (llmos's defaults add a repetition penalty and a
    # trigram ban for small models).
    cfg_gen = GenerationConfig(max_new_tokens=new, repetition_penalty=1.0, no_repeat_ngram_size=0)
    for bs in args.batch_sizes:
        batch = prompts[:bs]
        ids, mask, _ = left_pad(batch, 0, torch.device("cpu"))

        def run_hf(ids=ids, mask=mask) -> list[list[int]]:
            with torch.inference_mode():
                out = hf.generate(
                    ids,
                    attention_mask=mask,
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    pad_token_id=0,
                    eos_token_id=None,
                    use_cache=True,
                )
            return out[:, ids.size(1) :].tolist()

        def run_ours(batch=batch) -> list[list[int]]:
            return generate_ids(model, batch, cfg_gen, eos_id=None, pad_id=0)

        (t_hf, out_hf), (t_ours, out_ours) = interleaved([run_hf, run_ours], args.repeats)
        rate_hf, rate_ours = bs * new / t_hf, bs * new / t_ours
        nc = "-"
        ratio_nc = "-"
        if not args.skip_no_cache:
            t_nc, out_nc = timed(lambda b=batch: no_cache_greedy(model, b, new), 1)
            assert out_nc == out_ours, "no-cache decoding differs from cached decoding"
            nc = f"{bs * new / t_nc:,.0f}"
            ratio_nc = f"{t_nc / t_ours:.2f}"
        print(
            f"{bs:>5} {rate_hf:>10,.0f} {rate_ours:>12,.0f} {rate_ours / rate_hf:>6.2f} "
            f"{nc:>15} {ratio_nc:>8} {out_hf == out_ours!s:>12}"
        )


if __name__ == "__main__":
    main()
