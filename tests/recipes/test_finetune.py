"""Fine-tuning a classifier end to end: train, best checkpoint, reload, evaluate, predict."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import llmos
from llmos.checkpoint.io import read_checkpoint
from llmos.cli import main
from llmos.config import FinetuneConfig, load_config
from llmos.errors import CheckpointError, ConfigError, DataError
from llmos.recipes.convert import export_hf
from llmos.recipes.finetune import finetune
from llmos.train.tasks.classify import score_classifier

POS = ["喜欢", "支持", "保护"]
NEG = ["讨厌", "反对", "破坏"]
SUBJECTS = ["我们", "老师", "学生", "公司", "记者"]
OBJECTS = ["经济", "文化", "城市", "技术", "教育"]


def write_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["text\tlabel"]
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        verb = rng.choice(POS if label == "pos" else NEG)
        rows.append(f"{rng.choice(SUBJECTS)}{verb}{rng.choice(OBJECTS)}。\t{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def encoder(tiny_encoder: Path) -> Path:
    return tiny_encoder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sentiment")
    write_split(d / "train.tsv", 400, 0)
    write_split(d / "valid.tsv", 60, 1)
    write_split(d / "test.tsv", 80, 2)
    return d


@pytest.fixture(scope="module")
def run(encoder: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ft")
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            f"init={encoder}",
            f"data.dataset={dataset}",
            f"out_dir={out}",
            "name=toy",
            "train.max_steps=60",
            "train.batch_size=16",
            "train.eval_every=20",
            "train.save_every=20",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=2e-3",
            "optim.warmup_steps=5",
            "class_weights=balanced",
        ],
    )
    return finetune(cfg)


def test_learns_the_task_and_keeps_the_best_checkpoint(run) -> None:
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["labels"] == ["neg", "pos"]
    assert report["test"]["accuracy"] > 0.9, report["test"]
    assert run.best["step"] in (20, 40, 60)
    valid = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["split"] == "valid"]
    assert run.best["value"] == max(r["macro_f1"] for r in valid)
    best_files = {p.name: p.read_bytes() for p in (run.run_dir / "best").iterdir()}
    assert {p.name: p.read_bytes() for p in run.checkpoint.iterdir()} == best_files
    assert (run.run_dir / "confusion_test.png").stat().st_size > 1000


def test_task_json_keeps_eight_training_texts_per_label(run, dataset: Path) -> None:
    rows = [x.split("\t") for x in (dataset / "train.tsv").read_text().splitlines()[1:]]
    examples = read_checkpoint(run.checkpoint).task.extra["examples"]
    assert sorted(examples) == ["neg", "pos"]
    for label, texts in examples.items():
        of_label = [t for t, lab in rows if lab == label]
        assert texts == of_label[:: len(of_label) // 8][:8]  # spread over the file


def test_reloaded_checkpoint_predicts_identically(run, dataset: Path) -> None:
    texts = [line.split("\t")[0] for line in (dataset / "test.tsv").read_text().splitlines()[1:]]
    a = llmos.load(run.checkpoint).classify(texts, batch_size=7)
    b = llmos.load(run.checkpoint).classify(texts, batch_size=32)
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b, strict=True))
    assert all(abs(sum(x["scores"].values()) - 1) < 1e-5 for x in a)
    report = json.loads((run.run_dir / "report.json").read_text())
    gold = [line.split("\t")[1] for line in (dataset / "test.tsv").read_text().splitlines()[1:]]
    acc = sum(x["label"] == g for x, g in zip(a, gold, strict=True)) / len(gold)
    assert acc == pytest.approx(report["test"]["accuracy"])


def test_evaluate_and_predict_cli(
    run, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "evaluate",
                str(run.checkpoint),
                "--data",
                str(dataset / "test.tsv"),
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(
        json.loads((run.run_dir / "report.json").read_text())["test"]["accuracy"]
    )
    assert set(report["per_class"]) == {"neg", "pos"} and (tmp_path / "confusion.png").is_file()
    inp = tmp_path / "in.txt"
    inp.write_text("我们喜欢文化。\n记者反对教育。\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run.checkpoint), "--input", str(inp), "--output", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["我们喜欢文化。", "记者反对教育。"]
    assert [r["label"] for r in rows] == ["pos", "neg"]
    capsys.readouterr()


def test_unseen_labels_are_reported(run, tmp_path: Path) -> None:
    from llmos.recipes.evaluate import evaluate_file

    p = tmp_path / "odd.tsv"
    p.write_text("text\tlabel\n我们喜欢文化。\tpos\n我们讨厌文化。\tneutral\n", encoding="utf-8")
    report = evaluate_file(run.checkpoint, p, out_dir=tmp_path / "e")
    assert report["unseen_labels"] == {"neutral": 1} and report["examples"] == 1


def test_bad_inputs(run, encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(llmos.LlmosError, match="classification model"):
        llmos.load(run.checkpoint).fill_mask("我[MASK]")
    with pytest.raises(llmos.LlmosError, match=r"not a classification model"):
        llmos.load(encoder).classify(["你好"])
    empty = tmp_path / "d"
    empty.mkdir()
    (empty / "train.tsv").write_text("text\tlabel\n好\tpos\n", encoding="utf-8")
    cfg = load_config(
        FinetuneConfig, None, [f"init={encoder}", f"data.dataset={empty}", f"out_dir={tmp_path}"]
    )
    with pytest.raises(DataError, match="no valid file"):
        finetune(cfg)
    cfg = load_config(
        FinetuneConfig, None, [f"init={tmp_path}", f"data.dataset={empty}", f"out_dir={tmp_path}"]
    )
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        finetune(cfg)
    code = main(["finetune", f"init={tmp_path / 'nope'}", "train.max_steps=1"])
    assert code == 2 and "not a checkpoint directory" in capsys.readouterr().err


def test_early_stopping_after_patience_validations(
    encoder: Path, dataset: Path, tmp_path: Path
) -> None:
    # lr ~ 0: the validation metric cannot improve after the first validation.
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            *toy_args(encoder, dataset, tmp_path, "stop"),
            "train.max_steps=60",
            "train.batch_size=16",
            "train.eval_every=10",
            "train.save_every=30",
            "train.progress=false",
            "optim.lr=1e-12",
            "optim.warmup_steps=0",
            "patience=2",
        ],
    )
    result = finetune(cfg)
    assert result.step == 30 and result.best["step"] == 10
    assert (tmp_path / "stop" / "checkpoints" / "step-0000030").is_dir()


def test_sentence_pairs_use_the_second_text(encoder: Path, tmp_path: Path) -> None:
    # The label is the polarity of text_b; text alone carries no signal, so accuracy well above
    # chance means the pair is encoded as [CLS] A [SEP] B [SEP] and B reaches the classifier.
    rng = random.Random(0)
    d = tmp_path / "pairs"
    d.mkdir()
    for split, n in (("train", 400), ("valid", 60), ("test", 80)):
        rows = ["text\ttext_b\tlabel"]
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            a = f"{rng.choice(SUBJECTS)}{rng.choice(POS + NEG)}{rng.choice(OBJECTS)}。"
            b = f"{rng.choice(SUBJECTS)}{rng.choice(POS if label == 'pos' else NEG)}。"
            rows.append(f"{a}\t{b}\t{label}")
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            f"init={encoder}",
            f"data.dataset={d}",
            f"out_dir={tmp_path}",
            "name=pairs",
            "train.max_steps=60",
            "train.batch_size=16",
            "train.eval_every=20",
            "train.save_every=60",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=2e-3",
            "optim.warmup_steps=5",
        ],
    )
    run = finetune(cfg)
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["test"]["accuracy"] > 0.85, report["test"]
    out = llmos.load(run.checkpoint).classify(["我们喜欢经济。"] * 2, ["老师讨厌。", "老师支持。"])
    assert [o["label"] for o in out] == ["neg", "pos"]


def test_the_result_carries_its_report_and_formats_what_the_cli_prints(
    run, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.recipes.evaluate import evaluate_file

    saved = json.loads((run.run_dir / "report.json").read_text())
    assert run.report.keys() == saved.keys()
    assert run.report["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"])
    lines = run.format_report().splitlines()
    assert lines[0] == f"checkpoint: {run.checkpoint}"
    assert lines[1].endswith("confusion_test.png")
    assert lines[3].startswith(f"best validation (step {run.best['step']}): ")
    report = evaluate_file(run.checkpoint, dataset / "test.tsv", out_dir=tmp_path)
    args = ["evaluate", str(run.checkpoint), "--data", str(dataset / "test.tsv")]
    assert main([*args, "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == report.format_report()


def test_init_layers_starts_from_the_first_layers(encoder: Path, dataset: Path, tmp_path) -> None:
    # lr ~ 0: the fine-tuned encoder is the init's first layer, and nothing above it.
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            *toy_args(encoder, dataset, tmp_path, "cut"),
            "init_layers=1",
            "train.max_steps=2",
            "train.batch_size=8",
            "train.eval_every=2",
            "train.save_every=2",
            "train.progress=false",
            "optim.lr=1e-12",
            "optim.warmup_steps=0",
        ],
    )
    result = finetune(cfg)
    src, out = read_checkpoint(encoder), read_checkpoint(result.checkpoint)
    assert src.config.num_layers == 2 and out.config.num_layers == 1
    a, b = src.weights(), out.weights()
    assert not any(k.startswith("bert.layers.1.") for k in b)
    for k, v in b.items():
        if k.startswith(("bert.layers.0.", "bert.embeddings.")):
            torch.testing.assert_close(v, a[k], atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="has 2 layers, asked for 3"):
        finetune(
            load_config(
                FinetuneConfig, None, [*toy_args(encoder, dataset, tmp_path, "x"), "init_layers=3"]
            )
        )
    with pytest.raises(ConfigError, match="init_layers must be >= 1"):
        load_config(FinetuneConfig, None, ["init_layers=0"])


def test_freeze_layers_trains_only_the_layers_above_and_resumes_exactly(
    encoder: Path, dataset: Path, tmp_path
) -> None:
    import shutil

    from safetensors.torch import load_file

    argv = [
        *toy_args(encoder, dataset, tmp_path, "frozen"),
        "freeze_layers=1",
        "train.max_steps=6",
        "train.batch_size=8",
        "train.eval_every=3",
        "train.save_every=3",
        "train.progress=false",
        "optim.lr=1e-3",
        "optim.warmup_steps=0",
        "patience=null",
    ]
    full = finetune(load_config(FinetuneConfig, None, argv))
    a, b = read_checkpoint(encoder).weights(), read_checkpoint(full.checkpoint).weights()
    frozen = [k for k in b if k.startswith(("bert.embeddings.", "bert.layers.0."))]
    trained = [k for k in b if k.startswith("bert.layers.1.")]
    assert frozen and trained
    assert all(torch.equal(b[k], a[k]) for k in frozen)  # not one bit moved
    assert not all(torch.equal(b[k], a[k]) for k in trained)
    # A run killed after its step-3 checkpoint resumes to the same weights: the optimizer
    # state it reloads holds the trained parameters only, as the run's own.
    killed = tmp_path / "killed"
    shutil.copytree(full.run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step-0000006")
    shutil.rmtree(killed / "checkpoint")
    resumed = finetune(load_config(FinetuneConfig, None, [*argv, "name=killed"]), resume=True)
    step6 = Path("checkpoints") / "step-0000006" / "model.safetensors"
    x, y = load_file(str(full.run_dir / step6)), load_file(str(resumed.run_dir / step6))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    with pytest.raises(ConfigError, match="freeze_layers: 3 is more than the 2 layers"):
        finetune(load_config(FinetuneConfig, None, [*argv, "name=x", "freeze_layers=3"]))
    with pytest.raises(ConfigError, match="freeze_layers must be >= 0"):
        load_config(FinetuneConfig, None, ["freeze_layers=-1"])


def test_eval_every_0_never_validates_and_keeps_the_last_step(
    encoder: Path, dataset: Path, tmp_path
) -> None:
    from safetensors.torch import load_file

    argv = [
        *toy_args(encoder, dataset, tmp_path, "unvalidated"),
        "train.max_steps=4",
        "train.batch_size=8",
        "train.eval_every=0",
        "train.save_every=4",
        "train.log_every=2",
        "train.progress=false",
    ]
    result = finetune(load_config(FinetuneConfig, None, argv))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert [r["split"] for r in rows] == ["train", "train"]
    assert (result.run_dir / "loss.png").is_file() and not (result.run_dir / "best").exists()
    last = result.run_dir / "checkpoints" / "step-0000004" / "model.safetensors"
    x, y = load_file(str(last)), load_file(str(result.checkpoint / "model.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["best"] is None and 0.0 <= report["test"]["accuracy"] <= 1.0
    assert "best validation" not in result.format_report()
    with pytest.raises(ConfigError, match=r"train\.eval_every must be positive \(or 0"):
        load_config(FinetuneConfig, None, ["train.eval_every=-1"])


def toy_args(encoder: Path, dataset: Path, out: Path, name: str) -> list[str]:
    """The overrides every tiny fine-tune here starts with: init, data, output and run name."""
    return [f"init={encoder}", f"data.dataset={dataset}", f"out_dir={out}", f"name={name}"]


def test_mean_pooling_head_learns_and_reloads(encoder: Path, dataset: Path, tmp_path) -> None:
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            *toy_args(encoder, dataset, tmp_path, "mean"),
            "pooling=mean",
            "train.max_steps=60",
            "train.batch_size=16",
            "train.eval_every=20",
            "train.save_every=20",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=2e-3",
            "optim.warmup_steps=5",
        ],
    )
    result = finetune(cfg)
    assert result.report["test"]["accuracy"] > 0.9
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt.task.pooling == "mean"
    assert json.loads((result.checkpoint / "task.json").read_text())["pooling"] == "mean"
    assert not any(k.startswith("bert.pooler.") for k in ckpt.weights())
    # The head reads the mean of the last layer over the real tokens: padding changes nothing.
    pipe = llmos.load(result.checkpoint)
    texts = ["我们喜欢城市。", "他们讨厌经济发展和文化建设。"]
    together = pipe.classify(texts)
    for text, row in zip(texts, together, strict=True):
        assert row["scores"] == pytest.approx(pipe.classify([text])[0]["scores"], abs=1e-5)
    with torch.no_grad():
        ids = torch.tensor([pipe.tokenizer.encode(texts[0]).ids])
        h = pipe.model.bert(ids)
        want = pipe.model.classifier(h.mean(1)).softmax(-1)[0]
    assert list(together[0]["scores"].values()) == pytest.approx(want.tolist(), abs=1e-5)
    with pytest.raises(CheckpointError, match="pooling: mean"):
        export_hf(result.checkpoint, tmp_path / "hf")
    with pytest.raises(ConfigError, match="pooling chooses a classifier's input"):
        load_config(FinetuneConfig, None, ["task=tagging", "pooling=mean"])


def test_text_prefix_is_trained_recorded_and_read(
    encoder: Path, dataset: Path, tmp_path: Path
) -> None:
    prefix = "the market: "
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            *toy_args(encoder, dataset, tmp_path, "prefixed"),
            f"data.text_prefix='{prefix}'",  # quoted: a bare `the market: ` is a YAML mapping
            "train.max_steps=10",
            "train.batch_size=16",
            "train.eval_every=10",
            "train.save_every=10",
            "train.progress=false",
            "train.precision=fp32",
        ],
    )
    assert cfg.data.text_prefix == prefix
    result = finetune(cfg)
    task = json.loads((result.checkpoint / "task.json").read_text())
    assert task["text_prefix"] == prefix
    assert list(task)[:6] == [
        "task",
        "labels",
        "max_length",
        "label_key",
        "text_prefix",
        "examples",
    ]
    # The run's test loss is the model's on prefix + text, encoded here by hand.
    pipe = llmos.load(result.checkpoint)
    rows = [line.split("\t") for line in (dataset / "test.tsv").read_text().splitlines()[1:]]
    labels = result.report["labels"]
    with torch.no_grad():
        logits = torch.cat(
            [pipe.model(torch.tensor([pipe.tokenizer.encode(prefix + t).ids])) for t, _ in rows]
        )
    target = torch.tensor([labels.index(y) for _, y in rows])
    loss = torch.nn.functional.cross_entropy(logits, target).item()
    assert result.report["test"]["loss"] == pytest.approx(loss, abs=1e-5)
    # classify() (and so predict, evaluate and /v1/classify) reads the same inputs.
    got = [r["label"] for r in pipe.classify([t for t, _ in rows])]
    assert got == [labels[i] for i in logits.argmax(-1).tolist()]
    accuracy = (logits.argmax(-1) == target).float().mean().item()
    assert score_classifier(pipe, dataset / "test.tsv")["accuracy"] == pytest.approx(accuracy)
    with pytest.raises(CheckpointError, match="text_prefix"):
        export_hf(result.checkpoint, tmp_path / "hf")
    with pytest.raises(ConfigError, match=r"data\.text_prefix .* needs task: classification"):
        load_config(FinetuneConfig, None, ["task=tagging", "data.text_prefix=x"])
