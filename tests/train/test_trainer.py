"""The training loop: schedule, loss normalisation, exact resume after a real kill, DDP."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llmos.checkpoint.io import read_config, read_weights
from llmos.config import OptimConfig, PretrainConfig, load_config
from llmos.errors import ConfigError
from llmos.models.bert import BertForPreTraining
from llmos.recipes.pretrain import pretrain
from llmos.train.optim import lr_factor, param_groups

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny_values(corpus: Path, tokenizer: Path, out_dir: Path, **train: object) -> dict:
    return {
        "name": "tiny",
        "out_dir": str(out_dir),
        "model": {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 64,
            "max_position": 64,
        },
        "data": {
            "corpus": str(corpus),
            "tokenizer": str(tokenizer),
            "max_length": 32,
            "max_valid_examples": 32,
        },
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {
            "max_steps": 6,
            "batch_size": 8,
            "eval_every": 3,
            "save_every": 3,
            "log_every": 1,
            "precision": "fp32",
            "num_threads": 1,
            "progress": False,
            "eval_batches": 2,
            **train,
        },
    }


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    return path


def test_lr_schedule_warmup_then_decay() -> None:
    cfg = OptimConfig(warmup_steps=10, schedule="linear")
    assert lr_factor(0, cfg, 110) == pytest.approx(0.1)
    assert lr_factor(9, cfg, 110) == pytest.approx(1.0)
    assert lr_factor(60, cfg, 110) == pytest.approx(0.5)
    assert lr_factor(110, cfg, 110) == pytest.approx(0.0)
    cos = OptimConfig(warmup_steps=0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(50, cos, 100) == pytest.approx(0.1 + 0.9 * 0.5)


def test_no_weight_decay_on_biases_and_layernorm() -> None:
    from llmos.config import BertConfig

    model = BertForPreTraining(
        BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    )
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "norm" in names[id(p)] for p in no_decay["params"])
    assert all(
        not names[id(p)].endswith("bias") and "norm" not in names[id(p)] for p in decay["params"]
    )
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_a_scalar_parameter_is_not_decayed() -> None:
    """CLIP's learned temperature (a 0-d parameter) goes with the biases; its projections'
    weight matrices are decayed."""
    from llmos.config.model import CLIPConfig, ViTConfig
    from llmos.models.clip import CLIPModel

    vision = ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32
    )
    model = CLIPModel(CLIPConfig(vision=vision, text_dim=8, projection_dim=4))
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert "logit_scale" in {names[id(p)] for p in no_decay["params"]}
    assert "logit_scale" not in {names[id(p)] for p in decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])


def test_head_lr_puts_the_task_head_in_groups_of_its_own() -> None:
    from llmos.config import BertConfig
    from llmos.models.bert import BertForSequenceClassification
    from llmos.train.optim import build_optimizer, build_scheduler

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    model = BertForSequenceClassification(cfg, 3, pooling="mean")
    groups = param_groups(model, 0.01, head_lr=1e-2)
    names = {id(p): n for n, p in model.named_parameters()}
    head = [names[id(p)] for g in groups[2:] for p in g["params"]]
    assert sorted(head) == ["classifier.bias", "classifier.weight"]
    assert [g.get("lr") for g in groups] == [None, None, 1e-2, 1e-2]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt_cfg = OptimConfig(lr=1e-4, head_lr=1e-2, warmup_steps=10)
    opt = build_optimizer(model, opt_cfg)
    sched = build_scheduler(opt, opt_cfg, 100)
    for _ in range(5):
        opt.step()
        sched.step()
    # the schedule scales both rates alike: at step 5 of a 10-step warmup, 6/10 of each peak
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([6e-5, 6e-5, 6e-3, 6e-3])
    assert len(param_groups(model, 0.01)) == 2  # without head_lr: the groups as before


def test_accumulation_gives_the_same_weights_as_one_batch(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    results = {}
    for micro in (8, 2):
        values = tiny_values(
            tiny_corpus, tiny_tokenizer, tmp_path / f"m{micro}", micro_batch_size=micro
        )
        values["model"].update(dropout=0.0, attention_dropout=0.0)
        cfg = load_config(PretrainConfig, write_config(tmp_path / f"m{micro}.yaml", values))
        results[micro] = read_weights(pretrain(cfg).checkpoint)
    for key, value in results[8].items():
        torch.testing.assert_close(results[2][key], value, atol=2e-5, rtol=1e-4, msg=key)


def test_run_writes_metrics_plot_and_checkpoints(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        PretrainConfig,
        write_config(
            tmp_path / "c.yaml", tiny_values(tiny_corpus, tiny_tokenizer, tmp_path, keep_last=1)
        ),
    )
    result = pretrain(cfg)
    run = tmp_path / "tiny"
    assert (run / "loss.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000006"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in result.checkpoint.iterdir()
    }
    rows = [yaml.safe_load(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    valid = [r for r in rows if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6]
    assert {"mlm_loss", "perplexity", "nsp_accuracy"} <= set(valid[0])
    assert result.last_valid == {k: v for k, v in valid[-1].items() if k not in ("step", "split")}


def _llmos(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmos", *args]


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    """Kill -9 a real training process after its 2nd checkpoint; --resume must end with exactly
    the weights of a run that was never interrupted (fp32, dropout on: RNG state restored)."""
    values = tiny_values(
        tiny_corpus,
        tiny_tokenizer,
        tmp_path,
        max_steps=300,
        save_every=20,
        eval_every=50,
        log_every=10,
    )
    values["model"].update(hidden_size=64, intermediate_size=256)
    config = write_config(tmp_path / "c.yaml", values)
    full = subprocess.run(
        _llmos("pretrain", "--config", str(config), "name=full"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert full.returncode == 0, full.stderr[-2000:]

    proc = subprocess.Popen(
        _llmos("pretrain", "--config", str(config), "name=killed"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = tmp_path / "killed" / "checkpoints" / "step-0000040"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "checkpoint").exists()

    resumed = subprocess.run(
        _llmos("pretrain", "--config", str(config), "name=killed", "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def steps(run: str) -> list[int]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [yaml.safe_load(x)["step"] for x in lines]

    assert steps("full") == steps("killed")


def test_interrupted_checkpoint_write_leaves_previous_loadable(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    from llmos.checkpoint.io import save_checkpoint

    cfg = load_config(
        PretrainConfig,
        write_config(tmp_path / "c.yaml", tiny_values(tiny_corpus, tiny_tokenizer, tmp_path)),
    )
    result = pretrain(cfg)
    before = read_weights(result.checkpoint)
    model = BertForPreTraining(read_config(result.checkpoint))

    def crash(tmp: Path) -> None:
        assert (tmp / "model.safetensors").exists()
        raise KeyboardInterrupt  # as if killed half-way through the write

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(result.checkpoint, model, model.cfg, extra=crash)
    after = read_weights(result.checkpoint)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [p for p in result.checkpoint.parent.iterdir() if p.name.startswith(".tmp-")]
    # A stale temp directory from a hard kill is ignored on resume.
    stale = tmp_path / "tiny" / "checkpoints" / ".tmp-step-0000009-123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x00garbage")
    values = tiny_values(tiny_corpus, tiny_tokenizer, tmp_path, max_steps=9)
    resumed = pretrain(
        load_config(PretrainConfig, write_config(tmp_path / "c9.yaml", values)), resume=True
    )
    assert resumed.step == 9


@pytest.mark.slow
def test_ddp_two_processes_match_one(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    """torchrun --nproc-per-node 2 (gloo): ranks end with identical parameters, equal (fp32,
    allclose) to a single process with the same global batch."""
    values = tiny_values(
        tiny_corpus, tiny_tokenizer, tmp_path, max_steps=5, save_every=5, eval_every=5
    )
    values["model"].update(dropout=0.0, attention_dropout=0.0)
    config = write_config(tmp_path / "c.yaml", values)
    worker = Path(__file__).with_name("ddp_worker.py")
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29531",
        str(worker),
        str(config),
        str(out),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks differ at {key}"
    single = read_weights(pretrain(load_config(PretrainConfig, config, ["name=single"])).checkpoint)
    for key in r0:
        torch.testing.assert_close(r0[key], single[key], atol=2e-5, rtol=1e-4, msg=key)
    shutil.rmtree(out)


def test_fresh_run_replaces_an_older_runs_checkpoints(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    long = tiny_values(tiny_corpus, tiny_tokenizer, tmp_path, max_steps=6)
    pretrain(load_config(PretrainConfig, write_config(tmp_path / "a.yaml", long)))
    short = tiny_values(tiny_corpus, tiny_tokenizer, tmp_path, max_steps=3)
    pretrain(load_config(PretrainConfig, write_config(tmp_path / "b.yaml", short)))
    assert [p.name for p in (tmp_path / "tiny" / "checkpoints").iterdir()] == ["step-0000003"]
    lines = (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert max(yaml.safe_load(x)["step"] for x in lines) == 3


def test_bf16_autocast_trains(tiny_corpus: Path, tiny_tokenizer: Path, tmp_path: Path) -> None:
    """precision=bf16 runs under CPU autocast: finite losses, fp32 master weights saved."""
    values = tiny_values(tiny_corpus, tiny_tokenizer, tmp_path, max_steps=3, precision="bf16")
    result = pretrain(load_config(PretrainConfig, write_config(tmp_path / "c.yaml", values)))
    rows = [
        yaml.safe_load(x) for x in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert all(v.dtype == torch.float32 for v in read_weights(result.checkpoint).values())


def test_layer_decay_gives_each_encoder_layer_its_own_rate() -> None:
    from llmos.config import BertConfig
    from llmos.models.bert import BertForSequenceClassification
    from llmos.train.optim import build_optimizer, build_scheduler

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32)
    model = BertForSequenceClassification(cfg, 3, pooling="cls")
    opt_cfg = OptimConfig(lr=1e-3, head_lr=1e-2, layer_decay=0.5, warmup_steps=0)
    opt = build_optimizer(model, opt_cfg)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    expected = {}
    for name, p in model.named_parameters():
        if name.startswith("bert.layers."):
            expected[name] = 1e-3 * 0.5 ** (2 - int(name.split(".")[2]))  # top layer: lr
        elif name.startswith("bert.embeddings."):
            expected[name] = 1e-3 * 0.5**3  # one step below the first layer
        elif name.startswith("bert."):
            expected[name] = 1e-3  # the pooler, above the top layer
        else:
            expected[name] = 1e-2  # the head
        assert rate[id(p)] == pytest.approx(expected[name]), name
        assert decay[id(p)] == (0.0 if name.endswith("bias") or "norm" in name else 0.01), name
    assert len(rate) == len(list(model.parameters()))  # every parameter in exactly one group
    assert sum(len(g["params"]) for g in opt.param_groups) == len(rate)
    sched = build_scheduler(opt, OptimConfig(lr=1e-3, schedule="linear", warmup_steps=0), 10)
    for _ in range(5):
        opt.step()
        sched.step()
    # the schedule scales every group alike
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.5 * g["initial_lr"])
    with pytest.raises(ConfigError, match="layer_decay"):
        OptimConfig(layer_decay=1.5)


def test_mlm_evaluation_reports_the_hidden_targets_apart() -> None:
    """``masked_perplexity`` / ``masked_accuracy`` cover only the targets whose input is
    [MASK] (what an XLNet's or GPT's perplexity compares with), recomputed by hand."""
    from llmos.config.model import BertConfig
    from llmos.data.mlm import SpecialIds
    from llmos.train.tasks.mlm import PretrainTask

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=40,
        max_position=16,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        dropout=0.0,
        attention_dropout=0.0,
    )
    model = BertForPreTraining(cfg).eval()
    sp = SpecialIds(pad=0, cls=1, sep=2, mask=3, vocab_size=40, first_normal=5)
    ids = torch.tensor([[1, 3, 9, 3, 12, 2], [1, 7, 3, 30, 3, 2]])
    positions = torch.tensor([1, 2, 3, 8, 9, 10])  # flat into (2, 6): [MASK], shown, [MASK], ...
    labels = torch.tensor([8, 9, 11, 3 + 30, 30, 14])
    batch = {
        "input_ids": ids,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": None,
        "mlm_positions": positions,
        "mlm_labels": labels,
        "nsp_labels": None,
    }
    task = PretrainTask(None, [batch], sp, 0.15, 0)  # type: ignore[arg-type]
    with torch.no_grad():
        res = task.evaluate(model)
        logits = model(ids, batch["token_type_ids"], None, positions).mlm_logits
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    hidden = torch.tensor([True, False, True, True, False, True])  # inputs at the positions
    assert res["masked_perplexity"] == pytest.approx(math.exp(ce[hidden].mean().item()), rel=1e-5)
    assert res["perplexity"] == pytest.approx(math.exp(ce.mean().item()), rel=1e-5)
    hits = logits.argmax(-1) == labels
    assert res["masked_accuracy"] == pytest.approx(hits[hidden].float().mean().item())
