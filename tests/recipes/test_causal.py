"""GPT end to end on a tiny corpus: causal-LM pretraining (report, exact resume), the
checkpoint format, generation and streaming through the pipeline and the CLI, instruction
tuning."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmos.checkpoint.io import read_config, read_weights
from llmos.checkpoint.task import Instruct
from llmos.cli import main
from llmos.config import FinetuneConfig, PretrainConfig, load_config
from llmos.config.model import GPTConfig
from llmos.errors import ConfigError, LlmosError
from llmos.inference.generate import GenerationConfig, generate_ids
from llmos.inference.load import load_pipeline
from llmos.recipes.finetune import finetune
from llmos.recipes.pretrain import pretrain


@pytest.fixture(scope="module")
def bpe(tiny_corpus: Path) -> Path:
    from llmos.text.tokenizer import train_tokenizer

    # A small vocabulary: most CJK characters stay split over several byte tokens.
    return train_tokenizer("bpe", [tiny_corpus / "train.txt"], 300, tiny_corpus / "bpe")


def gpt_overrides(corpus: Path, tok: Path, out: Path, steps: int = 80) -> list[str]:
    return [
        "name=gpt",
        f"out_dir={out}",
        "model.model_type=gpt",
        "model.hidden_size=32",
        "model.num_layers=2",
        "model.num_heads=2",
        "model.intermediate_size=64",
        "model.max_position=64",
        f"data.corpus={corpus}",
        f"data.tokenizer={tok}",
        "data.max_length=32",
        f"train.max_steps={steps}",
        "train.batch_size=8",
        "train.eval_every=40",
        "train.save_every=40",
        "train.eval_batches=4",
        "train.progress=false",
        "train.precision=fp32",
        "optim.lr=0.01",
        "optim.warmup_steps=5",
    ]


@pytest.fixture(scope="module")
def gpt(tiny_corpus: Path, bpe: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("gpt")
    cfg = load_config(PretrainConfig, None, gpt_overrides(tiny_corpus, bpe, out))
    return pretrain(cfg)


def test_config_picks_the_decoder_and_its_objective(
    tiny_corpus: Path, bpe: Path, tiny_tokenizer: Path
) -> None:
    cfg = load_config(PretrainConfig, None, gpt_overrides(tiny_corpus, bpe, Path("/tmp")))
    assert isinstance(cfg.model, GPTConfig) and cfg.data.objective == "clm"
    with pytest.raises(
        ConfigError,
        match=r"model\.model_type: expected one of \['bert', 'roberta', 'gpt', 'xlnet', 'clip'\]",
    ):
        load_config(PretrainConfig, None, ["model.model_type=t5"])
    with pytest.raises(ConfigError, match=r"data\.objective 'mlm' does not fit model\.model_type"):
        load_config(PretrainConfig, None, ["model.model_type=gpt", "data.objective=mlm"])
    with pytest.raises(ConfigError, match="end-of-text token"):
        from llmos.text.tokenizer import load_tokenizer
        from llmos.train.tasks.clm import eos_id_of

        eos_id_of(load_tokenizer(tiny_tokenizer), "data.tokenizer")  # WordPiece: no eos


def test_pretraining_beats_the_unigram_baseline_and_reports_samples(gpt) -> None:
    report = json.loads((gpt.run_dir / "report.json").read_text())
    assert gpt.report == report
    assert gpt.format_report().splitlines()[:2] == [
        f"checkpoint: {gpt.checkpoint}",
        f"loss plot:  {gpt.run_dir / 'loss.png'}",
    ]
    assert report["valid"]["perplexity"] < 0.5 * report["unigram_perplexity"]
    assert [s["prompt"] for s in report["samples"]] == ["The", "It was a", "In the morning"]
    assert (gpt.run_dir / "loss.png").stat().st_size > 0
    assert isinstance(read_config(gpt.checkpoint), GPTConfig)
    # The tied output projection is stored once, under the embedding's name.
    weights = read_weights(gpt.checkpoint)
    assert "transformer.wte.weight" in weights and "lm_head.weight" not in weights


def test_gpt_pretraining_resumes_exactly(gpt, tmp_path: Path) -> None:
    killed = tmp_path / "gpt"
    shutil.copytree(gpt.run_dir, killed)  # as if killed right after the step-40 checkpoint
    shutil.rmtree(killed / "checkpoints" / "step-0000080")
    shutil.rmtree(killed / "checkpoint")
    cfg = load_config(PretrainConfig, gpt.run_dir / "config.yaml", [f"out_dir={tmp_path}"])
    resumed = pretrain(cfg, resume=True)
    a, b = read_weights(gpt.checkpoint), read_weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_gpt_ddp_two_processes_match_one(tiny_corpus: Path, bpe: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m llmos pretrain` (gloo) ends with the weights of one
    process training on the same global batches."""
    over = gpt_overrides(tiny_corpus, bpe, tmp_path, steps=6)
    over += ["model.dropout=0.0", "model.attention_dropout=0.0", "train.eval_every=6"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", "29533", "-m", "llmos", "pretrain", *over, "name=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = pretrain(load_config(PretrainConfig, None, [*over, "name=single"]))
    a, b = read_weights(tmp_path / "ddp" / "checkpoint"), read_weights(single.checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)


def test_pipeline_generate_matches_the_token_loop_and_reloads(gpt) -> None:
    pipe = load_pipeline(gpt.checkpoint)
    prompts = ["今天我们", "The market"]
    texts = pipe.generate(prompts, max_new_tokens=12)
    ids = [pipe.tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    rows = generate_ids(
        pipe.model, ids, GenerationConfig(max_new_tokens=12), eos_id=0, pad_id=pipe._pad_id()
    )
    # Equal to the whole decode, except that stray bytes (never a character) are dropped.
    assert texts == [
        b"".join(pipe._token_bytes[t] for t in r).decode("utf-8", errors="ignore") for r in rows
    ]
    assert pipe.generate("今天我们", max_new_tokens=12) == texts[0]
    beams = pipe.generate("今天", max_new_tokens=8, num_beams=3, num_return_sequences=3)
    assert isinstance(beams, list) and len(beams) == 3


def test_stream_yields_whole_characters_and_joins_to_generate(gpt) -> None:
    pipe = load_pipeline(gpt.checkpoint)
    for opts in ({}, {"strategy": "sample", "seed": 3, "temperature": 1.5}):
        pieces = list(pipe.stream("去年老师", max_new_tokens=30, **opts))
        assert "".join(pieces) == pipe.generate("去年老师", max_new_tokens=30, **opts)
        assert len(pieces) > 1 and not any("\ufffd" in p for p in pieces)
        assert sum(any("\u4e00" <= c <= "\u9fff" for c in p) for p in pieces) > 0


def test_stop_strings_cut_generate_and_stream(gpt) -> None:
    pipe = load_pipeline(gpt.checkpoint)
    free = pipe.generate("现在他", max_new_tokens=30)
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    cut = free[: free.index(stop)]
    assert pipe.generate("现在他", max_new_tokens=30, stop=(stop,)) == cut
    assert "".join(pipe.stream("现在他", max_new_tokens=30, stop=(stop,))) == cut


def test_long_prompts_are_cut_from_the_left_and_bad_requests_fail(
    gpt, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = load_pipeline(gpt.checkpoint)
    long = "今天我们学习经济。" * 30
    ids = pipe.tokenizer.encode(long, add_special_tokens=False).ids
    assert len(ids) > 64
    with caplog.at_level(logging.WARNING, logger="llmos.inference"):
        got = pipe.generate(long, max_new_tokens=10)
    assert "kept its last 54" in caplog.text
    tail = generate_ids(pipe.model, [ids[-54:]], GenerationConfig(max_new_tokens=10), eos_id=0)
    assert got == b"".join(pipe._token_bytes[t] for t in tail[0]).decode("utf-8", "ignore")
    with pytest.raises(LlmosError, match="prompt 0 is empty"):
        pipe.generate("  ", max_new_tokens=8)
    with pytest.raises(LlmosError, match="must be below the context window of 64"):
        pipe.generate("今天", max_new_tokens=64)
    with pytest.raises(LlmosError, match="streaming decodes one sequence"):
        list(pipe.stream("今天", num_beams=2))
    with pytest.raises(LlmosError, match="top_p must be in"):
        pipe.generate("今天", top_p=1.5)


def test_generate_cli_streams_and_writes_jsonl(
    gpt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = load_pipeline(gpt.checkpoint)
    ck = str(gpt.checkpoint)
    assert main(["generate", ck, "--prompt", "今天我们", "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out == pipe.generate("今天我们", max_new_tokens=12) + "\n"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "今天"}\n{"prompt": "The city"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["generate", ck, "--input", str(prompts), "--output", str(out), "--num-beams", "2"]
    assert main([*args, "--max-new-tokens", "6"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["今天", "The city"]
    assert rows[1]["generation"] == pipe.generate("The city", max_new_tokens=6, num_beams=2)
    capsys.readouterr()
    assert main(["generate", ck, "--prompt", "x", "--top-p", "0"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["generate", ck, "--input", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: input file not found" in capsys.readouterr().err


def test_instruction_tuning_learns_responses(gpt, tiny_encoder: Path, tmp_path: Path) -> None:
    data = tmp_path / "inst"
    data.mkdir()
    pairs = [(f"重复这个词:{w}", w) for w in ["经济", "文化", "城市", "农村", "技术", "教育"]]
    pairs += [("你好", "你好!很高兴见到你。"), ("Who are you?", "I am a small model.")]
    rows = [{"instruction": q, "input": "", "output": a, "source": "qa"} for q, a in pairs]
    for split in ("train", "valid", "test"):
        (data / f"{split}.jsonl").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
        )
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            "name=inst",
            f"out_dir={tmp_path}",
            f"init={gpt.checkpoint}",
            "task=instruct",
            f"data.dataset={data}",
            "data.max_length=64",
            "train.max_steps=60",
            "train.batch_size=8",
            "train.eval_every=20",
            "train.save_every=20",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=0.003",
            "optim.warmup_steps=5",
        ],
    )
    assert cfg.select == "loss"
    result = finetune(cfg)
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["tuned"]["response"]["loss"] < 0.5 * report["base"]["response"]["loss"]
    assert (
        report["tuned"]["quality"]["all"]["answer_f1"]
        > report["base"]["quality"]["all"]["answer_f1"]
    )
    pipe = load_pipeline(result.checkpoint)
    assert isinstance(pipe.spec, Instruct)
    # The instruction template is applied for an instruct checkpoint (raw=False).
    assert pipe.generate("你好", max_new_tokens=20) == pipe.generate(
        "### Instruction:\n你好\n\n### Response:\n", raw=True, max_new_tokens=20
    )
    # llmos evaluate: the tuned model on the instruction file, the base model on text.
    (tmp_path / "inst" / "corpus.txt").write_text("今天我们学习经济。\n\n去年他参观城市。\n")
    assert main(["evaluate", str(result.checkpoint), "--data", str(data / "test.jsonl")]) == 0
    ev = json.loads((result.run_dir / "eval-test" / "report.json").read_text())
    assert ev["response"]["loss"] == pytest.approx(report["tuned"]["response"]["loss"], 1e-4)
    assert ev["quality"] == report["tuned"]["quality"]
    lines = (result.run_dir / "eval-test" / "generations.jsonl").read_text().splitlines()
    assert len(lines) == len(rows)
    out = tmp_path / "ev"
    args = ["--data", str(tmp_path / "inst" / "corpus.txt"), "--out-dir", str(out)]
    assert main(["evaluate", str(gpt.checkpoint), *args]) == 0
    ppl = json.loads((out / "report.json").read_text())
    unigram = json.loads((gpt.run_dir / "report.json").read_text())["unigram_perplexity"]
    assert ppl["kind"] == "text" and 1 < ppl["perplexity"] < unigram  # text like the corpus

    bert = cfg.__class__(**{**cfg.__dict__, "init": str(tiny_encoder), "name": "bert"})
    with pytest.raises(LlmosError, match="task instruct needs a GPT checkpoint"):
        finetune(bert)
