"""``llmos calibrate``: a classifier's (or a multi-task head's) temperature fitted on its
validation split, recorded in task.json, and applied by classify() and analyze()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipes.test_finetune import write_split
from scipy.special import softmax

import llmos
from llmos.cli import main
from llmos.config import FinetuneConfig, load_config
from llmos.data.readers import read_classification
from llmos.errors import ConfigError, LlmosError
from llmos.recipes.finetune import finetune
from llmos.train.calibration import calibrate_checkpoint, nll


@pytest.fixture(scope="module")
def classifier(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-class sentiment classifier of the tiny encoder, trained as test_finetune's."""
    d = tmp_path_factory.mktemp("cal-data")
    for split, n, seed in (("train", 200, 0), ("valid", 80, 1), ("test", 20, 2)):
        write_split(d / f"{split}.tsv", n, seed)
    # every fifth validation label flipped: no classifier is right on all of them, so the
    # likelihood has a finite best temperature (on a clean split this one is always right)
    lines = (d / "valid.tsv").read_text(encoding="utf-8").splitlines()
    flip = {"pos": "neg", "neg": "pos"}
    for i in range(1, len(lines), 5):
        text, label = lines[i].split("\t")
        lines[i] = f"{text}\t{flip[label]}"
    (d / "clean-valid.tsv").write_text((d / "valid.tsv").read_text(encoding="utf-8"))
    (d / "valid.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("cal-ft")
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            f"init={tiny_encoder}",
            f"data.dataset={d}",
            f"out_dir={out}",
            "name=toy",
            "train.max_steps=60",
            "train.batch_size=16",
            "train.eval_every=0",
            "train.save_every=60",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=2e-3",
            "optim.warmup_steps=2",
        ],
    )
    return finetune(cfg).checkpoint


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def copy(ckpt: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ckpt, tmp_path / "run" / "checkpoint"))


def test_the_fitted_temperature_is_recorded_and_classify_applies_it(
    classifier: Path, tmp_path: Path
) -> None:
    ckpt = copy(classifier, tmp_path)
    valid_file = json.loads((ckpt / "task.json").read_text())["dataset"] + "/valid.tsv"
    valid = read_classification(valid_file)
    texts = [r.text for r in valid.rows]
    before = llmos.load(ckpt).classify(texts)
    order = list(before[0]["scores"])
    p0 = np.array([[b["scores"][x] for x in order] for b in before])
    y = np.array([order.index(r.label) for r in valid.rows])

    [fit] = calibrate_checkpoint(ckpt)
    task = json.loads((ckpt / "task.json").read_text())
    assert task["temperature"] == pytest.approx(fit.temperature) and fit.temperature != 1.0
    assert fit.examples == len(texts) and fit.nll_after < fit.nll_before
    assert Path(fit.plot).is_file()
    assert (tmp_path / "run" / "calibration" / "calibration.json").is_file()

    after = llmos.load(ckpt).classify(texts)
    assert [a["label"] for a in after] == [b["label"] for b in before]  # no label changes
    p1 = np.array([[a["scores"][x] for x in order] for a in after])
    np.testing.assert_allclose(p1, softmax(np.log(p0) / fit.temperature, axis=1), atol=1e-5)
    assert nll(np.log(p1), y) == pytest.approx(fit.nll_after, abs=1e-5)

    # fitting again starts from the recorded temperature: it stays where it is
    [again] = calibrate_checkpoint(ckpt)
    assert again.temperature_before == pytest.approx(fit.temperature)
    assert again.temperature == pytest.approx(fit.temperature, rel=0.01)

    # on the clean split it is right on every row: nothing to fit, the temperature stays
    clean = Path(valid_file).with_name("clean-valid.tsv")
    [bound] = calibrate_checkpoint(ckpt, data=clean)
    assert bound.at_bound and bound.temperature == pytest.approx(again.temperature)


def test_a_multitask_head_gets_its_own_temperature_and_analyze_applies_it(
    nlu_model: Path, tmp_path: Path
) -> None:
    ckpt = copy(nlu_model, tmp_path)
    texts = ["昨天老师研究文化。", "我们参观。", "今天学生参观城市。"]
    before, _ = llmos.load(ckpt).analyze(texts)
    with pytest.raises(LlmosError, match="no classification head 'slots'"):
        calibrate_checkpoint(ckpt, heads=["slots"])
    # its validation split is read without a miss: every fifth intent flipped, so that the
    # likelihood has a finite best temperature (the clean split would leave it at 1)
    task = json.loads((ckpt / "task.json").read_text())
    rows = read_jsonl(Path(task["heads"]["intent"]["dataset"]) / "valid.jsonl")
    for row in rows[::5]:
        row["intent"] = {"参观": "研究", "研究": "参观"}[row["intent"]]
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    [fit] = calibrate_checkpoint(ckpt, heads=["intent"], data=noisy)
    assert not fit.at_bound and fit.temperature != pytest.approx(1.0, abs=0.01)
    heads = json.loads((ckpt / "task.json").read_text())["heads"]
    assert heads["intent"]["temperature"] == pytest.approx(fit.temperature)
    assert "temperature" not in heads["sentiment"]
    after, _ = llmos.load(ckpt).analyze(texts)
    for b, a in zip(before, after, strict=True):
        order = list(b["intent"]["scores"])
        p0 = np.array([b["intent"]["scores"][x] for x in order])
        p1 = np.array([a["intent"]["scores"][x] for x in order])
        np.testing.assert_allclose(p1, softmax(np.log(p0) / fit.temperature), atol=1e-5)
        assert a["sentiment"] == b["sentiment"] and a["slots"] == b["slots"]


def test_cli_dry_run_writes_nothing_and_a_tagger_is_refused(
    classifier: Path, tiny_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = copy(classifier, tmp_path)
    task = (ckpt / "task.json").read_text()
    assert main(["calibrate", str(ckpt), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "temperature 1 ->" in out and "dry run" in out
    assert (ckpt / "task.json").read_text() == task
    assert main(["calibrate", str(tiny_encoder)]) != 0
    assert "calibrate needs a classifier" in capsys.readouterr().err
    (ckpt / "task.json").write_text(json.dumps({**json.loads(task), "temperature": -1}))
    with pytest.raises(llmos.LlmosError, match="field 'temperature' must be a number > 0"):
        llmos.load(ckpt)


def test_finetune_calibrates_when_the_config_says_so(tiny_encoder: Path, tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    for split, n, seed in (("train", 120, 0), ("valid", 40, 1), ("test", 20, 2)):
        write_split(d / f"{split}.tsv", n, seed)
    overrides = [
        f"init={tiny_encoder}",
        f"data.dataset={d}",
        f"out_dir={tmp_path}",
        "name=cal",
        "train.max_steps=8",
        "train.batch_size=16",
        "train.eval_every=0",
        "train.save_every=8",
        "train.progress=false",
        "train.precision=fp32",
        "calibrate=true",
    ]
    result = finetune(load_config(FinetuneConfig, None, overrides))
    [fit] = result.report["calibration"]
    assert fit["data"].endswith("valid.tsv") and fit["examples"] == 40
    task = json.loads((result.checkpoint / "task.json").read_text())
    assert task["temperature"] == pytest.approx(fit["temperature"])
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["calibration"] == result.report["calibration"]
    with pytest.raises(ConfigError, match="calibrate fits a classifier's temperature"):
        load_config(FinetuneConfig, None, [*overrides, "task=tagging"])


def test_exported_to_transformers_the_calibrated_probabilities_stay(
    classifier: Path, tmp_path: Path
) -> None:
    import torch
    import transformers as T

    from llmos.recipes.convert import export_hf

    ckpt = copy(classifier, tmp_path)
    [fit] = calibrate_checkpoint(ckpt)
    texts = ["我们喜欢文化。", "记者反对教育。", "公司保护城市。"]
    ours = llmos.load(ckpt).classify(texts)
    out = export_hf(ckpt, tmp_path / "hf")
    model = T.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = T.AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        probs = model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1)
    labels = [model.config.id2label[i] for i in range(probs.shape[1])]
    theirs = [dict(zip(labels, row, strict=True)) for row in probs.tolist()]
    assert fit.temperature != 1.0
    for a, b in zip(ours, theirs, strict=True):
        assert a["scores"] == pytest.approx(b, abs=1e-5)
