"""Spelling correction (MacBERT4CSC-style) end to end on a tiny random BERT: pairs with one
typo each are learned, the checkpoint saves a spelling task with its fitted threshold, and
``correct`` finds the typos at their offsets and leaves clean text alone."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from recipes.test_finetune_tagging_cjk_split import (
    ADVERBS,
    OBJECTS,
    SUBJECTS,
    VERBS,
    unigram_encoder,
    unigram_tokenizer,
)

import llmos
from llmos.checkpoint.io import read_checkpoint
from llmos.checkpoint.task import Spelling, parse_task
from llmos.config import FinetuneConfig, load_config
from llmos.inference.correct import CharVocab, apply_corrections, encode_windows
from llmos.models.csc import BertForSpellingCorrection
from llmos.recipes.finetune import finetune
from llmos.text.cjk import split_cjk_characters

# The typo each object gets: its first character swapped for another of the vocabulary.
TYPOS = {"城市": "农市", "农村": "城村", "经济": "研济"}


def assert_same_corrections(found: list, want: list) -> None:
    """The same edits with the same detection; the head's probability of each to 1e-6 (a
    decoding that reads only detection logits runs the head at its edits alone, and a product
    over fewer rows may round differently)."""

    def edits(rows: list) -> list:
        return [[(c.offset, c.original, c.suggestion, c.detect) for c in row] for row in rows]

    assert edits(found) == edits(want)
    probs = [c.prob for row in want for c in row]
    assert [c.prob for row in found for c in row] == pytest.approx(probs, abs=1e-6)


def sentence(rng: random.Random) -> str:
    return rng.choice(ADVERBS) + rng.choice(SUBJECTS) + rng.choice(VERBS) + rng.choice(OBJECTS)


def write_pairs(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        target = sentence(rng) + "。"
        source = target
        if rng.random() < 0.7:
            obj = target[-3:-1]
            source = target[:-3] + TYPOS[obj] + "。"
        rows.append(json.dumps({"source": source, "target": target}, ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("csc")
    init = unigram_encoder(root / "init")
    data = root / "data"
    data.mkdir()
    for split, n, seed in (("train", 400, 0), ("valid", 60, 1), ("test", 60, 2)):
        write_pairs(data / f"{split}.jsonl", n, seed)
    cfg = load_config(
        FinetuneConfig,
        None,
        [
            "name=csc",
            f"out_dir={root / 'runs'}",
            f"init={init}",
            "task=spelling",
            f"data.dataset={data}",
            "data.max_length=32",
            "optim.lr=0.003",
            "optim.warmup_steps=10",
            "train.max_steps=300",
            "train.batch_size=16",
            "train.eval_every=150",
            "train.save_every=150",
            "train.eval_batches=4",
            "train.progress=false",
            "train.precision=fp32",
            "train.seed=0",
        ],
    )
    result = finetune(cfg)
    return result.checkpoint, result.report


def test_vocab_is_the_tokenizers_single_characters() -> None:
    tok = split_cjk_characters(unigram_tokenizer())
    vocab = CharVocab.from_tokenizer(tok)
    chars = set("".join(ADVERBS + SUBJECTS + VERBS + OBJECTS))
    assert set(vocab.chars) == chars  # "。" is punctuation, not a character to correct
    assert all(tok.id_to_token(int(i)) == c for i, c in zip(vocab.ids, vocab.chars, strict=True))


def test_windows_cover_every_character_once() -> None:
    tok = split_cjk_characters(unigram_tokenizer())
    text = "今天记者参观城市。" * 5  # 45 characters, windows of 14 tokens
    windows = encode_windows(tok, [text], 16, 0, 2)
    assert len(windows) > 2
    offsets = [o for w in windows for o in w.offsets.tolist()]
    assert offsets == [i for i, c in enumerate(text) if c != "。"]
    for w in windows:
        assert w.ids[0] == 0 and w.ids[-1] == 2 and len(w.ids) <= 16
        assert all(tok.id_to_token(int(w.ids[p])).strip("▁") for p in w.positions)


def test_correction_head_starts_from_the_embeddings() -> None:
    from llmos.config import BertConfig

    cfg = BertConfig(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    model = BertForSpellingCorrection(cfg, 3)
    ids = torch.tensor([5, 9, 30])
    model.init_correction(ids)
    assert torch.equal(model.correct.weight, model.bert.embeddings.tok.weight[ids])
    assert torch.equal(model.char_ids, ids) and not model.correct.bias.any()
    out = model(torch.tensor([[1, 5, 9, 2]]), positions=torch.tensor([1, 2]))
    assert out.detect.shape == (1, 4) and out.correct.shape == (2, 3)


def test_training_learns_the_typos(trained: tuple[Path, dict]) -> None:
    path, report = trained
    spec = read_checkpoint(path).task
    chars = len(set("".join(ADVERBS + SUBJECTS + VERBS + OBJECTS)))
    assert isinstance(spec, Spelling) and spec.chars == chars and spec.detect_weight == 0.3
    assert spec.threshold == report["threshold"]
    assert (path.parent / "thresholds_valid.png").is_file()
    test = report["test"]
    # 70 % of the sentences have one typo that context fully determines.
    assert test["sentence_f1"] > 0.8, test
    assert test["fpr"] < 0.2, test


def test_pipeline_corrects_at_offsets(trained: tuple[Path, dict]) -> None:
    pipe = llmos.load(trained[0])
    texts = ["今天记者参观城市。", "昨天老师研究农市。", "现在农民保护研济。"]
    found = pipe.correct(texts)
    assert found[0] == []
    assert [(c.offset, c.original, c.suggestion) for c in found[1] + found[2]] == [
        (6, "农", "城"),
        (6, "研", "经"),
    ]
    assert all(
        pipe.spec.threshold <= c.detect <= 1 and 0 < c.prob <= 1 for c in found[1] + found[2]
    )
    assert apply_corrections(texts[2], found[2]) == "现在农民保护经济。"
    # No threshold reached: nothing changes.
    assert pipe.correct(texts, threshold=1.01) == [[], [], []]


def test_bf16_weights_make_the_same_corrections(trained: tuple[Path, dict]) -> None:
    """A spelling model loaded in bf16 (llmos write correct --precision) finds the same typos
    with detection and correction probabilities near the fp32 model's."""
    texts = ["今天记者参观城市。", "昨天老师研究农市。", "现在农民保护研济。"]
    fp32 = llmos.load(trained[0]).correct(texts)
    bf16 = llmos.load(trained[0], precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    found = bf16.correct(texts)
    assert [[(c.offset, c.suggestion) for c in row] for row in found] == [
        [(c.offset, c.suggestion) for c in row] for row in fp32
    ]
    for a, b in zip(fp32[1] + fp32[2], found[1] + found[2], strict=True):
        assert abs(a.detect - b.detect) < 0.05 and abs(a.prob - b.prob) < 0.05


def test_task_json_fields_are_checked() -> None:
    assert parse_task({"task": "spelling", "chars": 5}).threshold == 0.5
    with pytest.raises(llmos.LlmosError, match="'threshold' must be a number in"):
        parse_task({"task": "spelling", "chars": 5, "threshold": 2})
    with pytest.raises(llmos.LlmosError, match="'chars' must be a positive integer"):
        parse_task({"task": "spelling"})
    with pytest.raises(llmos.LlmosError, match="lm_order is a spelling model's n-gram LM order"):
        load_config(FinetuneConfig, None, ["task=classification", "lm_order=4"])
    with pytest.raises(llmos.LlmosError, match=r"\(2-8, task: spelling\), got 1"):
        load_config(FinetuneConfig, None, ["task=spelling", "lm_order=1"])
    shipped = Path(__file__).resolve().parents[2] / "configs" / "run" / "csc-zh.yaml"
    assert load_config(FinetuneConfig, shipped).lm_order == 4
    lm = {"file": "lm.json.gz", "alpha": 1, "beta": 0.5, "threshold": -2}
    spec = parse_task({"task": "spelling", "chars": 5, "lm": lm})
    assert spec.lm is not None and spec.lm.threshold == -2.0
    assert parse_task(spec.to_json()) == spec
    with pytest.raises(llmos.LlmosError, match=r"'lm\.file' must be a file name in the checkpoint"):
        parse_task({"task": "spelling", "chars": 5, "lm": lm | {"file": "../../etc/x"}})
    with pytest.raises(llmos.LlmosError, match=r"'lm\.beta' must be a number"):
        parse_task({"task": "spelling", "chars": 5, "lm": lm | {"beta": None}})


def test_other_models_say_they_cannot_correct(trained: tuple[Path, dict]) -> None:
    enc = llmos.load(read_checkpoint(trained[0]).path)  # the spelling model itself works
    assert enc.correct("今天") == [[]]
    with pytest.raises(llmos.LlmosError, match="not a spelling model"):
        llmos.load(Path(json.loads((trained[0] / "task.json").read_text())["init"])).correct("今天")


def test_cli_corrects_under_a_user_dictionary(
    trained: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmos.cli import main

    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))  # no prepared confusion sets
    model = str(trained[0])
    text = "昨天老师研究农市。"
    assert main(["write", "correct", "--model", model, "--any-character", "--json", text]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["corrected"] == "昨天老师研究城市。"
    assert row["edits"][0] | {"score": 0} == {
        "start": 6,
        "end": 7,
        "original": "农",
        "suggestion": "城",
        "score": 0,
        "kind": "spelling",
    }
    # A confusion set without 城 for 农: the model may not put it there.
    conf = tmp_path / "confusion"
    conf.mkdir()
    (conf / "same_pinyin.txt").write_text("#汉字\t同音同调\t同音异调\n农\t经\t\n", encoding="utf-8")
    (conf / "same_stroke.txt").write_text("", encoding="utf-8")
    assert main(["write", "correct", "--model", model, "--confusion", str(conf), text]) == 0
    assert capsys.readouterr().out.splitlines()[0] in (text, "昨天老师研究经市。")
    # The user protects "农市" (say, a place name) and adds a pair of their own.
    words = tmp_path / "words.txt"
    words.write_text("农市\n老师\t教师\n", encoding="utf-8")
    assert main(["write", "correct", "--model", model, "--dict", str(words), text]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "昨天教师研究农市。"
    assert out[1].strip() == "2: 老师 -> 教师  (dictionary, 1.00)"
    words.write_text("农市\n老师\t教\t师\n", encoding="utf-8")
    assert main(["write", "correct", "--model", model, "--dict", str(words), "今天"]) == 2
    assert "words.txt:2: expected 'term' or 'wrong<TAB>right'" in capsys.readouterr().err
    # bf16 weights: the same correction; the classic method has no weights to cast.
    argv = ["write", "correct", "--model", model, "--any-character", "--precision", "bf16"]
    assert main([*argv, text]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "昨天老师研究城市。"
    assert main(["write", "correct", "--model", "classic", "--precision", "auto", text]) == 2
    assert "takes no --threshold, --any-character or --precision" in capsys.readouterr().err


def test_threshold_sweep_equals_one_run_per_threshold(trained: tuple[Path, dict]) -> None:
    from llmos.data.spelling import read_corrections
    from llmos.text.tokenizer import special_ids
    from llmos.train.tasks.spelling import (
        THRESHOLDS,
        Decoding,
        encode_pairs,
        evaluate_spelling,
        fit_threshold,
    )

    pipe = llmos.load(trained[0])
    vocab = CharVocab.from_ids(pipe.tokenizer, pipe.model.char_ids.tolist())
    ids = special_ids(pipe.tokenizer)
    data_dir = Path(json.loads((trained[0] / "task.json").read_text())["dataset"])
    pairs = read_corrections(data_dir / "valid.jsonl")
    enc = encode_pairs(pipe.tokenizer, pairs, vocab, 32, ids["cls"], ids["sep"])
    # One pass: the sweep reads every threshold off one run at the lowest.
    how = Decoding(ids["pad"])
    best, rows = fit_threshold(pipe.model, enc, vocab, how)
    assert [r["threshold"] for r in rows] == list(THRESHOLDS)
    for r in rows:
        assert r == {"threshold": r["threshold"]} | evaluate_spelling(
            pipe.model, enc, vocab, r["threshold"], how
        )
    # Two passes (the model was trained with mask_correct): as the checkpoint was fitted.
    best, rows = fit_threshold(pipe.model, enc, vocab, Decoding(ids["pad"], ids["mask"]))
    assert best == trained[1]["threshold"]
    assert [r["threshold"] for r in rows] == [
        r["threshold"] for r in trained[1]["valid_thresholds"]
    ]


def test_confusion_sets_restrict_the_replacement(trained: tuple[Path, dict]) -> None:
    pipe = llmos.load(trained[0])
    text = ["昨天老师研究农市。"]
    found = pipe.correct(text, candidates=lambda ch: {"农": ["城", "经"]}.get(ch, []))
    assert [(c.offset, c.suggestion) for c in found[0]] == [(6, "城")]
    # Only the character itself allowed: nothing to replace it with.
    assert pipe.correct(text, candidates=lambda ch: []) == [[]]
    # The probability is the chosen character's among all (not renormalised over the set).
    free = pipe.correct(text)[0][0]
    assert found[0][0].prob == pytest.approx(free.prob)


def test_masking_hides_correct_characters_only() -> None:
    from llmos.train.tasks.spelling import Decoding, SpellTask, encode_pairs

    tok = split_cjk_characters(unigram_tokenizer())
    vocab = CharVocab.from_tokenizer(tok)
    rng = random.Random(0)
    pairs = []
    for _ in range(400):
        target = sentence(rng) + "。"
        pairs.append((target[:-3] + TYPOS[target[-3:-1]] + "。", target))
    enc = encode_pairs(tok, pairs, vocab, 32, 0, 2)
    mask_id = tok.token_to_id("<mask>")
    task = SpellTask(enc, enc, vocab, Decoding(1, mask_id), 0.3, 400, 0, 1, 0.2)
    batch = next(task.steps(type("Info", (), {"world": 1, "rank": 0})(), 400))[0]
    ids = batch["input_ids"].flatten()[batch["positions"]]
    masked = ids == mask_id
    assert not masked[batch["wrong"] == 1].any()  # a typo is never hidden
    share = masked[batch["wrong"] == 0].float().mean().item()
    assert 0.17 < share < 0.23, share  # 20 % of ~2,800 correct characters (4 SE either side)
    # The same position of the data masks the same characters (exact resume).
    task.load_state({"epoch": 0, "batch": 0})
    again = next(task.steps(type("Info", (), {"world": 1, "rank": 0})(), 400))[0]
    assert torch.equal(again["input_ids"], batch["input_ids"])


def test_a_spelling_model_is_trained_on_with_its_heads(
    trained: tuple[Path, dict], tmp_path: Path
) -> None:
    from llmos.checkpoint.io import read_weights
    from llmos.train.runs import load_init
    from llmos.train.tasks.spelling import setup_spelling

    data = Path(json.loads((trained[0] / "task.json").read_text())["dataset"])
    cfg = load_config(
        FinetuneConfig,
        None,
        [f"init={trained[0]}", "task=spelling", f"data.dataset={data}", f"out_dir={tmp_path}"],
    )
    init = load_init(cfg)
    setup = setup_spelling(cfg, init)
    model = setup.build()
    assert setup.load is not None
    setup.load(model, init.weights, init.path)
    saved = read_weights(trained[0])
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name  # heads included, not re-initialised


def test_decoding_with_an_ngram_lm(
    trained: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``llmos write lm`` fits the LM decoding on validation pairs and records it; the
    checkpoint then decodes with it (equal to csc_lm's decoding of the model's evidence; with
    alpha 0 the correction head runs only at the accepted edits, in chunks of texts), and the
    evidence is the heads' own output."""
    import shutil

    from llmos.cli import main
    from llmos.inference.csc_lm import lm_corrections
    from llmos.models.ngram import CharNgramLM
    from llmos.text.tokenizer import special_ids

    ckpt = tmp_path / "csc"
    shutil.copytree(trained[0], ckpt)
    data = Path(json.loads((ckpt / "task.json").read_text())["dataset"])
    # Without confusion sets there is nothing for the LM to choose among.
    assert main(["write", "lm", str(ckpt), "--valid", str(data / "valid.jsonl")]) == 2
    assert "no confusion sets saved with it" in capsys.readouterr().err
    conf = ckpt / "confusion"
    conf.mkdir()
    rows = "农\t城经\t\n城\t农\t\n研\t经\t\n经\t研\t\n"
    (conf / "same_pinyin.txt").write_text("#汉字\t同音同调\t同音异调\n" + rows, encoding="utf-8")
    (conf / "same_stroke.txt").write_text("", encoding="utf-8")
    rng = random.Random(5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentence(rng) + "。" for _ in range(300)), encoding="utf-8")
    args = ["--corpus", str(corpus), "--valid", str(data / "valid.jsonl"), "--pairs", "60"]
    assert main(["write", "lm", str(ckpt), *args]) == 0
    assert "decodes with a 4-gram LM" in capsys.readouterr().out
    spec = read_checkpoint(ckpt).task
    assert isinstance(spec, Spelling) and spec.lm is not None
    fit = json.loads((ckpt / "lm_fit.json").read_text())["chosen"]
    assert (spec.lm.alpha, spec.lm.beta, spec.lm.threshold) == (
        fit["alpha"],
        fit["beta"],
        fit["threshold"],
    )
    pipe = llmos.load(ckpt)
    texts = ["今天记者参观城市。", "昨天老师研究农市。", "现在农民保护研济。"]
    found = pipe.correct(texts)
    lm = CharNgramLM.load(ckpt / spec.lm.file)
    evidence = pipe.speller().evidence(texts)
    usable = pipe.speller().candidates()
    assert_same_corrections(found, lm_corrections(lm, texts, evidence, usable, spec.lm))
    # Both decodings, whichever the fit chose: with alpha 0 the head is read at the accepted
    # edits only, in chunks of texts (here one text each); otherwise at every position.
    for alpha in (0.0, 0.5):
        how = dataclasses.replace(spec.lm, alpha=alpha)
        monkeypatch.setattr("llmos.inference.speller.CHUNK_CHARACTERS", 10)
        other = llmos.load(ckpt)
        other.speller().spec = dataclasses.replace(spec, lm=how)
        want = lm_corrections(lm, texts, evidence, usable, how)
        assert_same_corrections(other.correct(texts), want)
    with pytest.raises(ValueError, match="alpha != 0 needs"):
        lm_corrections(lm, texts, [{6: (0.0, None)}] * 3, usable, how)
    fixed = [apply_corrections(t, f) for t, f in zip(texts, found, strict=True)]
    assert fixed == ["今天记者参观城市。", "昨天老师研究城市。", "现在农民保护经济。"]
    # The model alone: asked for, or with a detection threshold of one's own.
    assert pipe.correct(texts, lm=False) == pipe.correct(texts, threshold=spec.threshold)
    # The evidence at 农 of the second text is the detection and correction heads' output.
    vocab = CharVocab.from_ids(pipe.tokenizer, pipe.model.char_ids.tolist())
    ids = special_ids(pipe.tokenizer)
    [window] = encode_windows(pipe.tokenizer, [texts[1]], 32, ids["cls"], ids["sep"])
    pos = int(window.positions[list(window.offsets).index(6)])
    with torch.no_grad():
        out = pipe.model(torch.from_numpy(window.ids)[None])
    logit, logp = evidence[1][6]
    assert logit == pytest.approx(float(out.detect[0, pos]), abs=1e-5)
    want = out.correct[0, pos].log_softmax(-1)[[vocab.index[c] for c in "农城经"]]
    assert logp == pytest.approx(want.numpy(), abs=1e-5)


def _with_lm(trained: tuple[Path, dict], tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the trained checkpoint with confusion sets, a corpus, and a lexicon
    directory (pycorrector's layout) for the noisy-channel prior."""
    import shutil

    ckpt = tmp_path / "csc"
    shutil.copytree(trained[0], ckpt)
    conf = ckpt / "confusion"
    conf.mkdir()
    rows = "农\t城经\t\n城\t农\t\n研\t经\t\n经\t研\t\n"
    (conf / "same_pinyin.txt").write_text("#汉字\t同音同调\t同音异调\n" + rows, encoding="utf-8")
    (conf / "same_stroke.txt").write_text("", encoding="utf-8")
    lexicon = tmp_path / "lexicon"
    shutil.copytree(conf, lexicon)
    (lexicon / "word_freq.txt").write_text("城市 900 n\n经济 800 n\n农村 700 n\n", "utf-8")
    (lexicon / "person_name.txt").write_text("", encoding="utf-8")
    (lexicon / "place_name.txt").write_text("", encoding="utf-8")
    (lexicon / "common_char_set.txt").write_text("".join(f"{c}\n" for c in "农城经研"), "utf-8")
    rng = random.Random(5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentence(rng) + "。" for _ in range(300)), encoding="utf-8")
    return ckpt, lexicon, corpus


def test_the_lm_fit_tries_the_channel_prior_where_the_lexicon_is(
    trained: tuple[Path, dict], tmp_path: Path
) -> None:
    from llmos.train.spelling_lm import ALPHAS, BETAS, CHANNEL_THRESHOLDS, fit_spelling_lm

    ckpt, lexicon, corpus = _with_lm(trained, tmp_path)
    valid = Path(json.loads((ckpt / "task.json").read_text())["dataset"]) / "valid.jsonl"
    report = fit_spelling_lm(ckpt, corpus, valid, pairs=30, lexicon=lexicon, channel_pairs=30)
    channel = report["channel"]
    assert channel["prior_pairs"] == 30 and set(channel["weights"]) == {"weights", "constant"}
    # the evidence's weights chosen again from the same grid, with the prior in place
    assert channel["alpha"] in ALPHAS and channel["beta"] in BETAS
    assert channel["threshold"] in CHANNEL_THRESHOLDS
    spec = read_checkpoint(ckpt).task
    assert isinstance(spec, Spelling) and spec.lm is not None
    # The model already fixes every pair here: a tie, so the prior is not kept.
    assert channel["sentence_f1"] == report["without_channel"]["sentence_f1"] == 1.0
    assert not channel["chosen"] and spec.lm.channel is None
    assert not (ckpt / "confusion" / "word_freq.txt").exists()
    assert report["chosen"] == report["without_channel"]
    # without the lexicon, or with no pairs for it, the fit is the LM's alone
    plain = fit_spelling_lm(ckpt, corpus, valid, pairs=30, lexicon=tmp_path / "none")
    assert plain["channel"] is None and plain["chosen"] == plain["without_channel"]
    assert read_checkpoint(ckpt).task.lm.channel is None


def test_the_prior_is_kept_where_it_decodes_better(
    trained: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LM alone (the grid narrowed to alpha = beta = 0), learnt from a corpus where half
    the objects are typed wrong, fixes none of the pairs; the lexicon's prior fixes them, so
    the fit keeps it: task.json records its weights, the lexicon is copied beside the
    confusion sets, and the checkpoint decodes with it."""
    from llmos.train import spelling_lm

    monkeypatch.setattr(spelling_lm, "ALPHAS", (0.0,))
    monkeypatch.setattr(spelling_lm, "BETAS", (0.0,))
    ckpt, lexicon, corpus = _with_lm(trained, tmp_path)
    rng = random.Random(6)
    lines = []
    for _ in range(300):
        text = sentence(rng) + "。"
        lines.append(text[:-3] + TYPOS[text[-3:-1]] + "。" if rng.random() < 0.5 else text)
    corpus.write_text("\n".join(lines), encoding="utf-8")
    valid = Path(json.loads((ckpt / "task.json").read_text())["dataset"]) / "valid.jsonl"
    report = spelling_lm.fit_spelling_lm(
        ckpt, corpus, valid, pairs=30, lexicon=lexicon, channel_pairs=30
    )
    assert report["without_channel"]["sentence_f1"] == 0.0
    assert report["channel"]["chosen"] and report["chosen"]["sentence_f1"] == 1.0
    spec = read_checkpoint(ckpt).task
    assert isinstance(spec, Spelling) and spec.lm is not None
    assert spec.lm.channel == report["channel"]["weights"]
    assert spec.lm.threshold == report["channel"]["threshold"]
    for name in ("word_freq.txt", "person_name.txt", "place_name.txt", "common_char_set.txt"):
        assert (ckpt / "confusion" / name).read_bytes() == (lexicon / name).read_bytes()
    [found] = llmos.load(ckpt).correct(["今天老师研究农市。"])
    assert apply_corrections("今天老师研究农市。", found) == "今天老师研究城市。"


def test_a_checkpoint_decodes_with_its_channel_prior(
    trained: tuple[Path, dict], tmp_path: Path
) -> None:
    import shutil
    from dataclasses import replace

    from llmos.errors import CheckpointError
    from llmos.files import atomic_write_json
    from llmos.inference.csc_channel import (
        CHANNEL_FILES,
        FEATURES,
        ChannelPrior,
        ChannelWeights,
        channel_features,
    )
    from llmos.inference.csc_lm import lm_corrections
    from llmos.models.ngram import CharNgramLM
    from llmos.train.spelling_lm import fit_spelling_lm

    ckpt, lexicon, corpus = _with_lm(trained, tmp_path)
    valid = Path(json.loads((ckpt / "task.json").read_text())["dataset"]) / "valid.jsonl"
    fit_spelling_lm(ckpt, corpus, valid, pairs=60, lexicon=lexicon, channel_pairs=0)
    for name in CHANNEL_FILES:
        shutil.copy(lexicon / name, ckpt / "confusion" / name)
    texts = ["今天记者参观城市。", "昨天老师研究农市。", "现在农民保护研济。", "今天农民研究城村。"]
    spec = read_checkpoint(ckpt).task
    assert isinstance(spec, Spelling) and spec.lm is not None and spec.lm.channel is None
    lm = CharNgramLM.load(ckpt / spec.lm.file)

    def with_channel(weights: ChannelWeights) -> list:
        how = replace(spec.lm, channel=weights.to_json())
        atomic_write_json(ckpt / "task.json", replace(spec, lm=how).to_json())
        pipe = llmos.load(ckpt)
        prior = ChannelPrior(channel_features(ckpt / "confusion", lm), weights)
        evidence = pipe.speller().evidence(texts)
        want = lm_corrections(lm, texts, evidence, pipe.speller().candidates(), how, prior=prior)
        found = pipe.correct(texts)
        assert_same_corrections(found, want)
        return found

    words = ChannelWeights(dict.fromkeys(FEATURES, 0.0) | {"word_gain": 1.0}, 0.0)
    assert with_channel(words)  # some edits, the same as csc_lm's with the prior
    assert with_channel(ChannelWeights(dict.fromkeys(FEATURES, 0.0), -1000.0)) == [[]] * 4
    bad = json.loads((ckpt / "task.json").read_text())
    bad["lm"]["channel"]["weights"]["typo"] = 1.0
    (ckpt / "task.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"task\.json: lm\.channel: .*unknown \['typo'\]"):
        llmos.load(ckpt).correct(texts)
    bad["lm"]["channel"] = {"weights": {"word_gain": "x"}, "constant": 0}
    with pytest.raises(ValueError, match=r"lm\.channel\.weights"):
        parse_task(bad, "task.json")
