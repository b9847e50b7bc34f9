"""``llmos compress prune`` end to end on tiny fine-tuned models: report, heatmap, recovery run,
a pruned checkpoint that loads, predicts (as the original with those heads gated off), exports
to ONNX and is refused by the HF export; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import llmos
from llmos.checkpoint.io import read_config
from llmos.cli import main
from llmos.config import FinetuneConfig, load_config
from llmos.recipes.finetune import finetune

POS = ["喜欢", "支持", "保护"]
NEG = ["讨厌", "反对", "破坏"]
SUBJECTS = ["我们", "老师", "学生", "公司", "记者"]
OBJECTS = ["经济", "文化", "城市", "技术", "教育"]
TEXTS = ["我们喜欢文化。", "记者反对教育。", "公司", "老师保护城市，学生破坏技术。"]


def write_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["text\tlabel"]
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        verb = rng.choice(POS if label == "pos" else NEG)
        rows.append(f"{rng.choice(SUBJECTS)}{verb}{rng.choice(OBJECTS)}。\t{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_pku(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        who = rng.choice(["老师/nr", "记者/nr"])
        where = rng.choice(["城市/ns", "农村/ns", "经济/n"])
        lines.append(f"今天/t {who} {rng.choice(['参观/v', '研究/v'])} {where} 。/w")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tune(encoder: Path, out: Path, *extra: str):
    overrides = [
        f"init={encoder}",
        f"out_dir={out}",
        "train.max_steps=16",
        "train.batch_size=16",
        "train.eval_every=8",
        "train.save_every=8",
        "train.progress=false",
        "train.precision=fp32",
        "optim.lr=3e-3",
        "optim.warmup_steps=2",
        *extra,
    ]
    return finetune(load_config(FinetuneConfig, None, overrides))


@pytest.fixture(scope="module")
def classifier(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("sentiment")
    write_split(data / "train.tsv", 200, 0)
    write_split(data / "valid.tsv", 40, 1)
    write_split(data / "test.tsv", 50, 2)
    return tune(tiny_encoder, tmp_path_factory.mktemp("runs"), f"data.dataset={data}", "name=clf")


def prune(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    fast = ["--quiet", "--importance-examples", "64", "--bench-seconds", "0"]
    code = main(["compress", "prune", *argv, *fast])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prune_with_recovery_end_to_end(
    classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pruned"
    args = ["--heads", "0.5", "--ffn", "0.25", "--recover-steps", "4", "--out", str(out)]
    code, stdout, err = prune(capsys, str(classifier.checkpoint), *args)
    assert code == 0, err
    assert "heads removed: 2 of 4, FFN neurons removed: 32 of 128" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["heads"]["removed"] == 2 and sum(report["heads"]["kept_per_layer"]) == 2
    assert sum(map(len, report["heads"]["removed_per_layer"])) == 2
    tuned = json.loads((classifier.run_dir / "report.json").read_text())
    assert report["test"]["original"]["accuracy"] == pytest.approx(tuned["test"]["accuracy"])
    assert set(report["test"]) == {"original", "pruned", "recovered"}
    assert set(report["valid"]) == {"original", "pruned", "recovered"}
    assert report["recovery"]["steps"] == 4 and report["recovery"]["kept"] in (
        "pruned",
        "recovered",
    )
    params, size = report["params"], report["file_bytes"]
    assert params["pruned"] < params["original"] and size["pruned"] < size["original"]
    # two heads of 16 wide: 3*16*(32+1) qkv + 16*32 proj; 32 neurons: 2*32 + 1 each
    assert params["original"] - params["pruned"] == 2 * (3 * 16 * 33 + 16 * 32) + 32 * 65
    t = report["throughput"]
    assert t["split"] == "test" and t["examples"] == 50 and t["speedup"] > 0 and t["threads"] >= 1
    assert (out / "head_importance.png").stat().st_size > 1000
    run = out / "recover"
    assert (run / "metrics.jsonl").is_file() and (run / "loss.png").is_file()
    assert (run / "config.yaml").is_file() and (run / "best").is_dir()
    # The saved checkpoint: pruned sizes, labels kept, where it came from, loads and predicts.
    ckpt = out / "checkpoint"
    cfg = read_config(ckpt)
    assert cfg.layer_heads == report["heads"]["kept_per_layer"]
    assert sum(cfg.layer_intermediate) == 128 - 32
    task = json.loads((ckpt / "task.json").read_text())
    assert task["labels"] == ["neg", "pos"] and task["pruned_from"] == str(classifier.checkpoint)
    assert task["pruned_heads"] == report["heads"]["removed_per_layer"]
    results = llmos.load(ckpt).classify(TEXTS)
    assert [r["label"] in ("neg", "pos") for r in results] == [True] * 4
    if report["recovery"]["kept"] == "recovered":
        assert (ckpt / "model.safetensors").read_bytes() == (
            run / "checkpoint" / "model.safetensors"
        ).read_bytes()


def test_pruned_checkpoint_predicts_as_the_gated_original(
    classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p"
    args = ["--heads", "0.25", "--ffn", "0.5", "--out", str(out), "--no-normalize"]
    code, _, err = prune(capsys, str(classifier.checkpoint), *args)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["recovery"] is None and set(report["test"]) == {"original", "pruned"}
    assert report["heads"]["normalized_by_layer"] is False
    original = llmos.load(classifier.checkpoint)
    for layer, heads in enumerate(report["heads"]["removed_per_layer"]):
        gate = torch.ones(2)
        gate[heads] = 0
        original.model.bert.layers[layer].attn.head_mask = gate
    for layer, units in enumerate(report["ffn"]["removed_per_layer"]):
        gate = torch.ones(64)
        gate[units] = 0
        original.model.bert.layers[layer].ffn.neuron_mask = gate
    pruned = llmos.load(out / "checkpoint")
    a = [r["scores"]["pos"] for r in pruned.classify(TEXTS)]
    b = [r["scores"]["pos"] for r in original.classify(TEXTS)]
    assert a == pytest.approx(b, abs=1e-5)
    # The lowest (unnormalized) importance was removed.
    scores = report["heads"]["importance"]
    gone = {(i, h) for i, hh in enumerate(report["heads"]["removed_per_layer"]) for h in hh}
    rest = [s for i, row in enumerate(scores) for h, s in enumerate(row) if (i, h) not in gone]
    assert len(gone) == 1 and max(scores[i][h] for i, h in gone) <= min(rest)
    # ONNX export works; the Hugging Face export refuses with one clear line.
    ort = pytest.importorskip("onnxruntime")
    assert main(["export", "onnx", str(out / "checkpoint"), str(tmp_path / "onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    ids = np.array([[2, 7, 9, 11, 3], [2, 8, 3, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    got = session.run(
        None, {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}
    )[0]
    with torch.no_grad():
        expected = pruned.model(torch.from_numpy(ids), None, torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    capsys.readouterr()
    assert main(["convert", "--to-hf", str(out / "checkpoint"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "is pruned" in err and err.count("\n") == 1


def test_prune_a_tagger(
    tiny_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "pku"
    data.mkdir()
    for split, n, seed in (("train", 120, 0), ("valid", 20, 1), ("test", 30, 2)):
        write_pku(data / f"{split}.txt", n, seed)
    run = tune(
        tiny_encoder,
        tmp_path / "runs",
        "task=tagging",
        f"data.dataset={data}",
        "data.view=ner",
        "data.max_length=24",
        "name=ner",
    )
    out = tmp_path / "ner-pruned"
    code, stdout, err = prune(
        capsys, str(run.checkpoint), "--out", str(out), "--recover-steps", "2"
    )
    assert code == 0, err
    assert "heads removed: 2 of 4" in stdout and "test f1:" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "tagging" and report["metric"] == "f1"
    assert "f1" in report["test"]["pruned"] and "f1" in report["valid"]["recovered"]
    spans = llmos.load(out / "checkpoint").tag(["今天老师参观城市。"])
    assert isinstance(spans[0], list)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("heads-1", "--heads is the fraction to remove, in [0, 1); got 1.0"),
        ("heads-negative", "--heads is the fraction to remove, in [0, 1); got -0.1"),
        ("nothing", "nothing to prune"),
        ("gpt", "this is a GPT"),
        ("no-task", "no classification or tagging task.json"),
        ("shared", "shares one set of layer weights"),
        ("missing", "not a checkpoint directory"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    classifier,
    tiny_encoder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(classifier.checkpoint, ckpt)
    args = ["--heads", "0.5"]
    if case == "heads-1":
        args = ["--heads", "1.0"]
    elif case == "heads-negative":
        args = ["--heads=-0.1"]
    elif case == "nothing":
        args = ["--heads", "0"]
    elif case == "gpt":
        (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt", "vocab_size": 200}))
    elif case == "no-task":
        ckpt = tiny_encoder
    elif case == "shared":
        raw = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps(raw | {"share_layers": True}))
    elif case == "missing":
        ckpt = tmp_path / "nothing"
    code, _, err = prune(capsys, str(ckpt), *args, "--out", str(tmp_path / "out"))
    assert code == 2, err
    assert err.startswith("llmos: error: ") and err.count("\n") == 1 and message in err
