"""Fine-tuning taggers end to end on People's Daily-format data: NER (BIO) and word
segmentation (BMES); reload, tag(), long inputs, evaluate and predict."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights
from llmos.checkpoint.task import Tagging
from llmos.cli import main
from llmos.config import FinetuneConfig, load_config
from llmos.data.readers import read_spans
from llmos.data.tagging import allowed_transitions
from llmos.errors import DataError
from llmos.inference.tag import TokenizedText, predict_spans, tokenize_for_tagging
from llmos.recipes.finetune import finetune
from llmos.text.tokenizer import special_ids
from llmos.train.tasks.tag import TagEncoded, training_windows, window_edges

ADVERBS = ["今天", "昨天", "去年", "现在"]
PEOPLE = [["老", "师"], ["记者"], ["农", "民"]]  # split ones test that nr + nr is one person
VERBS = ["参观", "研究", "保护", "介绍"]
PLACES = ["城市", "农村"]
OTHER = ["经济", "文化", "历史"]


def write_pku(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [f"{rng.choice(ADVERBS)}/t"]
        words += [f"{w}/nr" for w in rng.choice(PEOPLE)]
        words.append(f"{rng.choice(VERBS)}/v")
        if rng.random() < 0.5:
            words.append(f"{rng.choice(PLACES)}/ns")
        else:
            words.append(f"{rng.choice(OTHER)}/n")
        words.append("。/w")
        lines.append(" ".join(words))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pku")
    write_pku(d / "train.txt", 300, 0)
    write_pku(d / "valid.txt", 40, 1)
    write_pku(d / "test.txt", 60, 2)
    return d


def tagger(
    encoder: Path,
    dataset: Path,
    out: Path,
    view: str,
    scheme: str,
    steps: int = 80,
    extra: tuple[str, ...] = (),
):
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            f"init={encoder}",
            "task=tagging",
            f"data.dataset={dataset}",
            f"data.view={view}",
            f"data.scheme={scheme}",
            "data.max_length=24",
            f"out_dir={out}",
            f"name={view}",
            f"train.max_steps={steps}",
            "train.batch_size=16",
            "train.eval_every=10",
            "train.save_every=10",
            "train.progress=false",
            "train.precision=fp32",
            "optim.lr=3e-3",
            "optim.warmup_steps=5",
            *extra,
        ],
    )
    return finetune(cfg)


@pytest.fixture(scope="module")
def ner(tiny_encoder: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    return tagger(tiny_encoder, dataset, tmp_path_factory.mktemp("ner"), "ner", "bio")


@pytest.fixture(scope="module")
def seg(tiny_encoder: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    return tagger(tiny_encoder, dataset, tmp_path_factory.mktemp("seg"), "segmentation", "bmes")


def test_ner_learns_and_reports_span_scores(ner) -> None:
    report = json.loads((ner.run_dir / "report.json").read_text())
    assert report["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    test = report["test"]
    assert test["f1"] > 0.9 and test["accuracy"] > 0.9, test
    assert set(test["per_type"]) == {"PER", "LOC"}
    assert ner.best["value"] == max(
        json.loads(x)["f1"]
        for x in (ner.run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["split"] == "valid"
    )
    spec = read_checkpoint(ner.checkpoint).task
    assert isinstance(spec, Tagging) and spec.scheme == "bio" and spec.view == "ner"
    assert (ner.run_dir / "span_scores_test.png").stat().st_size > 1000


def test_tag_returns_character_spans_and_reloads_identically(ner, dataset: Path) -> None:
    rows = read_spans(dataset / "test.txt", view="ner").rows
    texts = [r.text for r in rows]
    a = llmos.load(ner.checkpoint).tag(texts, batch_size=5)
    b = llmos.load(ner.checkpoint).tag(texts, batch_size=64)
    assert [[(s["label"], s["start"], s["end"]) for s in x] for x in a] == [
        [(s["label"], s["start"], s["end"]) for s in x] for x in b
    ]
    for text, spans in zip(texts, a, strict=True):
        for s in spans:
            assert s["text"] == text[s["start"] : s["end"]] and 0 < s["score"] <= 1
    gold = {(i, *s) for i, r in enumerate(rows) for s in r.spans}
    pred = {(i, s["label"], s["start"], s["end"]) for i, x in enumerate(a) for s in x}
    f1 = 2 * len(gold & pred) / (len(gold) + len(pred))
    report = json.loads((ner.run_dir / "report.json").read_text())
    assert f1 == pytest.approx(report["test"]["f1"])
    assert llmos.load(ner.checkpoint).tag("") == [[]]


def test_segmentation_tiles_long_texts(seg, dataset: Path) -> None:
    report = json.loads((seg.run_dir / "report.json").read_text())
    assert report["labels"] == ["B", "M", "E", "S"]  # every character is in a word: no O
    assert report["test"]["f1"] > 0.8, report["test"]
    model = llmos.load(seg.checkpoint)
    rows = read_spans(dataset / "test.txt", view="segmentation").rows
    long_text = "".join(r.text for r in rows[:12])  # ~10x the 24-token window
    words = model.tag(long_text)[0]
    # Windows are stitched and decoded as one sequence: the words tile the text exactly.
    assert "".join(w["text"] for w in words) == long_text
    assert [w["start"] for w in words[1:]] == [w["end"] for w in words[:-1]]
    assert all(w["label"] == "" for w in words)


def test_evaluate_and_predict_cli(
    ner, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", str(ner.checkpoint), "--data", str(dataset / "test.txt")]
    assert main([*argv, "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    expected = json.loads((ner.run_dir / "report.json").read_text())["test"]
    assert report["f1"] == pytest.approx(expected["f1"])
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    assert (tmp_path / "span_scores.png").is_file()
    assert "span P" in capsys.readouterr().out
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "今天记者参观城市。"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(ner.checkpoint), "--input", str(inp), "--output", str(out)]) == 0
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["text"] == "今天记者参观城市。"
    found = {(s["label"], s["text"], s["start"], s["end"]) for s in row["spans"]}
    assert found == {("PER", "记者", 2, 4), ("LOC", "城市", 6, 8)}


def test_tagging_bad_inputs(ner, tiny_encoder: Path, dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(llmos.LlmosError, match="not a classification model"):
        llmos.load(ner.checkpoint).classify(["你好"])
    with pytest.raises(llmos.LlmosError, match="not a tagging model"):
        llmos.load(tiny_encoder).tag(["你好"])
    cfg = load_config(
        FinetuneConfig,
        None,
        [f"init={tiny_encoder}", "task=tagging", f"data.dataset={dataset}", f"out_dir={tmp_path}"],
    )
    with pytest.raises(DataError, match=r"train\.txt: a People's Daily word/POS file needs"):
        finetune(cfg)


def test_tagging_resumes_exactly(tiny_encoder: Path, dataset: Path, tmp_path: Path) -> None:
    import shutil

    full = tagger(tiny_encoder, dataset, tmp_path, "ner", "bio", steps=20)
    # A run killed after its step-10 checkpoint: the same directory without anything later.
    killed = tmp_path / "killed"
    shutil.copytree(full.run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step-0000020")
    cfg = load_config(
        FinetuneConfig,
        full.run_dir / "config.yaml",
        ["name=killed", "train.save_every=10"],
    )
    resumed = finetune(cfg, resume=True)
    a = read_weights(full.run_dir / "checkpoints" / "step-0000020")
    b = read_weights(resumed.run_dir / "checkpoints" / "step-0000020")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_skip_bad_rows_flag(ner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "t.txt"
    data.write_text("今天/t 记者/nr 参观/v 城市/ns 。/w\n今天 记者\n", encoding="utf-8")
    argv = ["evaluate", str(ner.checkpoint), "--data", str(data), "--out-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "t.txt:2: token '今天' is not word/POS (use --skip-bad-rows" in err
    assert main([*argv, "--skip-bad-rows"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["skipped_rows"] == 1 and report["examples"] == 1


@pytest.fixture(scope="module")
def crf_ner(tiny_encoder: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("crf")
    return tagger(tiny_encoder, dataset, out, "ner", "bio", extra=("crf=true", "name=ner-crf"))


def test_crf_tagger_learns_reloads_and_tags_valid_spans(crf_ner, ner, dataset: Path) -> None:
    report = json.loads((crf_ner.run_dir / "report.json").read_text())
    assert report["test"]["f1"] > 0.9, report["test"]
    task = json.loads((crf_ner.checkpoint / "task.json").read_text())
    assert task["crf"] is True and list(task)[:7] == [
        "task", "labels", "scheme", "max_length", "view", "spans_key", "crf"
    ]  # fmt: skip
    assert "crf" not in json.loads((ner.checkpoint / "task.json").read_text())
    weights = read_weights(crf_ner.checkpoint)
    assert {k for k in weights if k.startswith("crf.")} == {
        "crf.transitions", "crf.start", "crf.end"
    }  # fmt: skip
    model = llmos.load(crf_ner.checkpoint)
    crf = model.model.crf
    assert isinstance(model.spec, Tagging) and model.spec.crf and crf is not None
    assert crf.transitions[crf.allowed].abs().max() > 0  # the transitions were learned
    rows = read_spans(dataset / "test.txt", view="ner").rows
    texts = [r.text for r in rows]
    pred = model.tag(texts, batch_size=7)
    labels = list(model.spec.labels)
    allowed, start, end = allowed_transitions(labels, "bio")
    for text, spans in zip(texts, pred, strict=True):
        for s in spans:
            assert s["text"] == text[s["start"] : s["end"]] and 0 < s["score"] <= 1
    # Whole-text CRF Viterbi: every decoded tag sequence obeys BIO, also on a long text.
    long_text = "".join(texts[:10])
    tok = tokenize_for_tagging(model.tokenizer, [long_text])
    special = special_ids(model.tokenizer)
    _, (tags,), (spans,) = predict_spans(model.model, tok, [long_text], model.decoder, special, 24)
    path = [labels.index(t) for t in tags]
    assert start[path[0]] and end[path[-1]]
    assert all(allowed[a, b] for a, b in itertools.pairwise(path))
    assert spans == model.tag(long_text)[0]
    gold = {(i, *s) for i, r in enumerate(rows) for s in r.spans}
    found = {(i, s["label"], s["start"], s["end"]) for i, x in enumerate(pred) for s in x}
    f1 = 2 * len(gold & found) / (len(gold) + len(found))
    assert f1 == pytest.approx(report["test"]["f1"])


def test_crf_tagger_export_is_refused_clearly(crf_ner, tmp_path: Path) -> None:
    from llmos.errors import CheckpointError
    from llmos.inference.onnx_export import export_onnx
    from llmos.recipes.convert import export_hf

    with pytest.raises(CheckpointError, match=r"CRF head .* which no transformers class has"):
        export_hf(crf_ner.checkpoint, tmp_path / "hf")
    with pytest.raises(CheckpointError, match="ONNX export does not cover taggers with a CRF"):
        export_onnx(crf_ner.checkpoint, tmp_path / "onnx")


def test_crf_segmentation_trains_on_cut_windows(
    tiny_encoder: Path, dataset: Path, tmp_path: Path
) -> None:
    """Windows of 6 content tokens cut most texts: open edges must not break training."""
    extra = ("crf=true", "data.max_length=8", "name=seg-crf", "patience=null")
    run = tagger(tiny_encoder, dataset, tmp_path, "segmentation", "bmes", 60, extra)
    report = json.loads((run.run_dir / "report.json").read_text())
    # 6-token windows see little context: the softmax tagger scores 0.64 here too.
    assert report["test"]["f1"] > 0.6, report["test"]
    losses = [
        json.loads(x)["loss"]
        for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["split"] == "train"
    ]
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0]
    rows = read_spans(dataset / "test.txt", view="segmentation").rows
    long_text = "".join(r.text for r in rows[:5])
    words = llmos.load(run.checkpoint).tag(long_text)[0]
    assert "".join(w["text"] for w in words) == long_text


def test_window_edges_mark_cut_windows() -> None:
    tokens = [TokenizedText(np.arange(n), [(i, i + 1) for i in range(n)]) for n in (13, 6, 1)]
    data = TagEncoded([], tokens, [[0] * len(t.ids) for t in tokens], 0)
    ids, _ = training_windows(data, 8, 101, 102)
    edges = window_edges(data, 8)
    assert len(ids) == len(edges) == 5
    assert edges.tolist() == [
        [False, True], [True, True], [True, False], [False, False], [False, False]
    ]  # fmt: skip


def test_crf_loss_reads_each_window_alone_without_specials_or_padding() -> None:
    """The batched CRF loss equals the sum of each window's NLL computed on its own."""
    from llmos.config.model import BertConfig
    from llmos.inference.tag import SpanDecoder, tagger_model
    from llmos.train.tasks.tag import TagTask

    torch.manual_seed(0)
    labels = ["O", "B-X", "I-X"]
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2)
    model = tagger_model(cfg, labels, "bio", crf=True).eval()
    with torch.no_grad():
        model.crf.transitions.normal_()
    ids = [np.array([1, 5, 6, 7, 2]), np.array([1, 8, 2]), np.array([1, 9, 10, 11, 12, 2])]
    tags = [[-100, 2, 0, 1, -100], [-100, 1, -100], [-100, 2, 2, -100, 0, -100]]
    edges = np.array([[True, False], [False, False], [True, True]])
    task = TagTask(
        ids, [np.array(t) for t in tags], None, SpanDecoder(labels, "bio"),  # type: ignore[arg-type]
        {"pad": 0}, 8, 3, 0, crf_edges=edges,
    )  # fmt: skip
    batch = task.collate(np.arange(3))
    known = task.counts(batch)[0]
    loss, _ = task.loss(model, batch, [known])
    want = 0.0
    for x, t, (open_start, open_end) in zip(ids, tags, edges, strict=True):
        logits = model(torch.from_numpy(x)[None])[:, 1:-1]  # one window, content tokens only
        n = logits.shape[1]
        want += model.crf.nll(
            logits, torch.tensor(t[1:-1])[None], torch.ones(1, n, dtype=torch.bool),
            torch.tensor([open_start]), torch.tensor([open_end]),
        ).item()  # fmt: skip
    assert known == 7 and loss.item() == pytest.approx(want / known, rel=1e-5)
