"""`llmos convert` for XLNet against transformers: tiny random-init ``XLNetLMHeadModel``,
``XLNetModel``, ``XLNetForSequenceClassification`` and ``XLNetForTokenClassification`` with a
SentencePiece (Unigram) tokenizer built the way transformers' ``XLNetTokenizer`` builds one are
imported (outputs and token ids equal HF's), exported (AutoModel* and AutoTokenizer load them
with the same outputs) and imported again (weights identical); llmos's own XLNet checkpoints
(WordPiece, ``xlnet_layout``) export the same way; unsupported options are refused by name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tokenizers import SentencePieceUnigramTokenizer

import llmos
from llmos.checkpoint.io import read_checkpoint, read_weights, save_checkpoint
from llmos.checkpoint.task import Classification, MaskedLM, Tagging
from llmos.cli import main
from llmos.config.model import XLNetConfig
from llmos.errors import CheckpointError
from llmos.inference.load import build_model
from llmos.models.xlnet import (
    XLNetForSequenceClassification,
    XLNetForTokenClassification,
    XLNetLMHeadModel,
)
from llmos.recipes.convert import export_hf, import_hf
from llmos.text.tokenizer import load_tokenizer, special_ids, xlnet_layout

T = pytest.importorskip("transformers")

# XLNet's special tokens in xlnet-base-cased's order: <cls> 3, <sep> 4, <pad> 5.
XLNET_SPECIALS = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]
SIZES = dict(d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0)
LABELS = {0: "neg", 1: "pos", 2: "mid"}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER"}
TEXTS = ["今天我们学习经济。", "记者反对教育，the market grew。", "好", "he"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_corpus: Path):
    """transformers' own XLNetTokenizer (its normalizer, Metaspace, ``A <sep> <cls>``
    template, left padding) over a Unigram vocabulary trained on the tiny corpus."""
    lines = [s for s in (tiny_corpus / "train.txt").read_text().splitlines() if s]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(
        lines, vocab_size=300, special_tokens=XLNET_SPECIALS, unk_token="<unk>", show_progress=False
    )
    vocab = [tuple(p) for p in json.loads(sp._tokenizer.to_str())["model"]["vocab"]]
    tok = T.XLNetTokenizer(vocab=vocab, unk_id=0)
    assert [tok.convert_tokens_to_ids(t) for t in XLNET_SPECIALS] == list(range(9))
    return tok


@pytest.fixture(scope="module")
def wordpiece(tiny_tokenizer: Path):
    """llmos's WordPiece laid out for XLNet (``A [SEP] [CLS]``), as its pretraining saves it."""
    return xlnet_layout(load_tokenizer(tiny_tokenizer))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial LayerNorms and biases, not just their init values, and matrices at about
    1/sqrt(C), not the init's 0.02: at 0.02 a classifier's output is its biases, whatever the
    text, and the segment term is too small to see."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
            elif p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model.eval()


def hf_dir(cls: str, tok, path: Path, **config) -> tuple[torch.nn.Module, Path]:
    """A random-init tiny HF XLNet of class ``cls`` saved with its tokenizer at ``path``."""
    torch.manual_seed(0)
    hcfg = T.XLNetConfig(vocab_size=len(tok), pad_token_id=5, **SIZES, **config)
    model = perturbed(getattr(T, cls)(hcfg))
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return model, path


def encoded(tok, texts: list[str]) -> dict[str, torch.Tensor]:
    """HF's inputs, left-padded; with the segment ids (2 for <cls>) that transformers 5 no
    longer returns by default and llmos's XLNet reads, as XLNet's own code feeds them."""
    return tok(texts, padding=True, return_tensors="pt", return_token_type_ids=True)


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL), (got - expected).abs().max()


def same_weights(a: Path, b: Path) -> None:
    wa, wb = read_weights(a), read_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def plm_inputs(B: int, T_: int, M: int, vocab: int) -> tuple[torch.Tensor, ...]:
    """Random factorisation orders over M targets per row: ids, perm_mask, target_mapping."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(9, vocab, (B, T_), generator=g)
    perm = torch.zeros(B, T_, T_)
    mapping = torch.zeros(B, M, T_)
    for b in range(B):
        targets = torch.randperm(T_, generator=g)[:M].sort().values
        rank = torch.full((T_,), -1)
        rank[targets] = torch.randperm(M, generator=g)
        perm[b] = ((rank[:, None] <= rank[None, :]) & (rank >= 0)[None, :]).float()
        mapping[b, torch.arange(M), targets] = 1.0
    return ids, perm, mapping


def test_lm_import_export_round_trip(hf_tokenizer, tmp_path: Path) -> None:
    hf, src = hf_dir("XLNetLMHeadModel", hf_tokenizer, tmp_path / "hf")
    ours = import_hf(src, tmp_path / "llmos")
    ckpt = read_checkpoint(ours)
    assert isinstance(ckpt.config, XLNetConfig) and ckpt.config.max_position == 512
    assert ckpt.task == MaskedLM()  # a pretrained XLNet: no task.json
    pipe = llmos.load(ours)
    assert isinstance(pipe.model, XLNetLMHeadModel)

    # The tokenizer is HF's, its template kept: "A <sep> <cls>", segment 2 for <cls>.
    for text in TEXTS:
        enc = ckpt.tokenizer.encode(text)
        assert enc.ids == hf_tokenizer(text)["input_ids"] and enc.ids[-2:] == [4, 3]
        assert enc.type_ids[-1] == 2
    pair = ckpt.tokenizer.encode(TEXTS[0], TEXTS[1])
    theirs = hf_tokenizer(TEXTS[0], TEXTS[1], return_token_type_ids=True)
    assert (pair.ids, pair.type_ids) == (theirs["input_ids"], theirs["token_type_ids"])

    batch = encoded(hf_tokenizer, TEXTS)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert mask[2, 0] == 0  # HF pads on the left
    real = mask.bool()
    with torch.no_grad():
        expected = hf(**batch).logits
        close(pipe.model(ids, mask, types).logits[real], expected[real])
        # The query stream of permutation LM.
        ids, perm, mapping = plm_inputs(2, 9, 3, hf.config.vocab_size)
        expected = hf(ids, perm_mask=perm, target_mapping=mapping).logits
        close(pipe.model(ids, perm_mask=perm, target_mapping=mapping).logits, expected)

    exported = export_hf(ours, tmp_path / "export")
    back = T.AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    assert type(back).__name__ == "XLNetLMHeadModel"
    with torch.no_grad():
        close(back(ids, perm_mask=perm, target_mapping=mapping).logits, expected)
    auto = T.AutoTokenizer.from_pretrained(str(exported))
    assert auto.padding_side == "left"
    assert (auto.cls_token, auto.sep_token, auto.pad_token, auto.mask_token) == (
        "<cls>",
        "<sep>",
        "<pad>",
        "<mask>",
    )
    assert (auto.bos_token, auto.eos_token, auto.unk_token) == ("<s>", "</s>", "<unk>")
    assert auto(TEXTS)["input_ids"] == hf_tokenizer(TEXTS)["input_ids"]
    same_weights(ours, import_hf(exported, tmp_path / "again"))


def test_bare_model_imports_as_an_lm_with_a_zero_bias(
    hf_tokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hf, src = hf_dir("XLNetModel", hf_tokenizer, tmp_path / "hf")
    with caplog.at_level(logging.WARNING, logger="llmos.convert"):
        ours = import_hf(src, tmp_path / "llmos")
    assert "bare XLNetModel" in caplog.text
    weights = read_weights(ours)
    assert not weights["lm_loss.bias"].any()
    model = llmos.load(ours).model
    batch = encoded(hf_tokenizer, TEXTS)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = hf(**batch).last_hidden_state
        got, _ = model.transformer(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        )
    close(got[real], expected[real])
    back = T.AutoModel.from_pretrained(str(export_hf(ours, tmp_path / "export"))).eval()
    with torch.no_grad():
        close(back(**batch).last_hidden_state[real], expected[real])


def test_sequence_classifier_import_export_round_trip(hf_tokenizer, tmp_path: Path) -> None:
    hf, src = hf_dir(
        "XLNetForSequenceClassification", hf_tokenizer, tmp_path / "hf", id2label=LABELS
    )
    ours = import_hf(src, tmp_path / "llmos")
    assert read_checkpoint(ours).task == Classification(
        labels=("neg", "pos", "mid"), max_length=512
    )
    scores = llmos.load(ours).classify(TEXTS)
    with torch.no_grad():
        probs = hf(**encoded(hf_tokenizer, TEXTS)).logits.softmax(-1)
    for ours_row, row in zip(scores, probs.tolist(), strict=True):
        assert ours_row["scores"] == pytest.approx(
            dict(zip(LABELS.values(), row, strict=True)), abs=ATOL
        )

    exported = export_hf(ours, tmp_path / "export")
    back = T.AutoModelForSequenceClassification.from_pretrained(str(exported)).eval()
    auto = T.AutoTokenizer.from_pretrained(str(exported))
    with torch.no_grad():
        close(back(**auto(TEXTS, padding=True, return_tensors="pt")).logits.softmax(-1), probs)
    assert back.config.id2label == LABELS
    same_weights(ours, import_hf(exported, tmp_path / "again"))


def test_token_classifier_import_export_round_trip(hf_tokenizer, tmp_path: Path) -> None:
    hf, src = hf_dir("XLNetForTokenClassification", hf_tokenizer, tmp_path / "hf", id2label=TAGS)
    ours = import_hf(src, tmp_path / "llmos")
    assert read_checkpoint(ours).task == Tagging(
        labels=("O", "B-PER", "I-PER"), scheme="bio", max_length=512
    )
    model = llmos.load(ours).model
    assert isinstance(model, XLNetForTokenClassification)
    batch = encoded(hf_tokenizer, TEXTS)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    real = mask.bool()
    with torch.no_grad():
        expected = hf(**batch).logits
        close(model(ids, types, mask)[real], expected[real])
    exported = export_hf(ours, tmp_path / "export")
    back = T.AutoModelForTokenClassification.from_pretrained(str(exported)).eval()
    with torch.no_grad():
        close(back(**batch).logits[real], expected[real])
    same_weights(ours, import_hf(exported, tmp_path / "again"))


def llmos_checkpoint(model: torch.nn.Module, cfg: XLNetConfig, tok, path: Path, task=None):
    torch.manual_seed(1)
    return save_checkpoint(path, perturbed(model), cfg, tok, task)


def xlnet_config(tok) -> XLNetConfig:
    return XLNetConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        dropout=0.0,
        pad_token_id=special_ids(tok)["pad"],
    )


def test_llmos_classifier_exports_to_transformers(wordpiece, tmp_path: Path) -> None:
    """An llmos XLNet classifier over its WordPiece: transformers' AutoModel and AutoTokenizer
    (which pads on the left, where llmos pads on the right) give llmos's probabilities, and
    the import back gives the same weights and config."""
    cfg = xlnet_config(wordpiece)
    torch.manual_seed(0)
    task = Classification(labels=("neg", "pos", "mid"))
    ckpt = llmos_checkpoint(
        XLNetForSequenceClassification(cfg, 3), cfg, wordpiece, tmp_path / "ours", task
    )
    ours = llmos.load(ckpt).classify(TEXTS)
    out = export_hf(ckpt, tmp_path / "hf")
    settings = json.loads((out / "tokenizer_config.json").read_text())
    assert settings["padding_side"] == "left"
    assert (settings["cls_token"], settings["sep_token"], settings["pad_token"]) == (
        "[CLS]",
        "[SEP]",
        "[PAD]",
    )
    assert (settings["mask_token"], settings["unk_token"]) == ("[MASK]", "[UNK]")
    model = T.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = T.AutoTokenizer.from_pretrained(str(out))
    for text in TEXTS:
        assert tok(text)["input_ids"] == wordpiece.encode(text).ids
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert batch["attention_mask"][2, 0] == 0 and batch["token_type_ids"][0, -1] == 2
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)
    for a, row in zip(ours, probs.tolist(), strict=True):
        assert a["scores"] == pytest.approx(dict(zip(task.labels, row, strict=True)), abs=ATOL)
    # Why the tokenizer returns segment ids: without them XLNet drops its segment term.
    del batch["token_type_ids"]
    with torch.no_grad():
        assert (model(**batch).logits.softmax(-1) - probs).abs().max() > 1e-3

    again = import_hf(out, tmp_path / "again")
    same_weights(ckpt, again)
    back = read_checkpoint(again)
    assert back.config == cfg and back.task.labels == task.labels
    assert back.tokenizer.to_str() == wordpiece.to_str()


def test_calibrated_temperature_folds_into_logits_proj(wordpiece, tmp_path: Path) -> None:
    cfg = xlnet_config(wordpiece)
    torch.manual_seed(0)
    task = Classification(labels=("neg", "pos"), temperature=2.5)
    ckpt = llmos_checkpoint(
        XLNetForSequenceClassification(cfg, 2), cfg, wordpiece, tmp_path / "ours", task
    )
    ours = llmos.load(ckpt).classify(TEXTS)
    out = export_hf(ckpt, tmp_path / "hf")
    model = T.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = T.AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        probs = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits.softmax(-1)
    for a, row in zip(ours, probs.tolist(), strict=True):
        assert a["scores"] == pytest.approx(dict(zip(task.labels, row, strict=True)), abs=ATOL)
    raw = read_weights(ckpt)["logits_proj.bias"]
    assert torch.allclose(model.logits_proj.bias, raw / 2.5)


def test_llmos_lm_exports_to_auto_model_for_causal_lm(wordpiece, tmp_path: Path) -> None:
    cfg = xlnet_config(wordpiece)
    torch.manual_seed(0)
    ckpt = llmos_checkpoint(XLNetLMHeadModel(cfg), cfg, wordpiece, tmp_path / "ours")
    out = export_hf(ckpt, tmp_path / "hf")
    hf = T.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert isinstance(hf, T.XLNetLMHeadModel)
    assert hf.config.pad_token_id == special_ids(wordpiece)["pad"]
    ours = llmos.load(ckpt).model
    ids, perm, mapping = plm_inputs(2, 9, 3, cfg.vocab_size)
    batch = T.AutoTokenizer.from_pretrained(str(out))(TEXTS, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        close(
            ours(ids, perm_mask=perm, target_mapping=mapping).logits,
            hf(ids, perm_mask=perm, target_mapping=mapping).logits,
        )
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        close(got[real], hf(**batch).logits[real])
    same_weights(ckpt, import_hf(out, tmp_path / "again"))


def test_llmos_only_heads_are_refused(wordpiece, tmp_path: Path) -> None:
    cfg = xlnet_config(wordpiece)
    torch.manual_seed(0)
    crf = Tagging(labels=("O", "B-PER", "I-PER"), scheme="bio", crf=True)
    ckpt = llmos_checkpoint(build_model(cfg, crf, tmp_path), cfg, wordpiece, tmp_path / "crf", crf)
    with pytest.raises(CheckpointError, match="CRF head"):
        export_hf(ckpt, tmp_path / "hf")
    prefixed = Classification(labels=("a", "b"), text_prefix="query: ")
    ckpt = llmos_checkpoint(
        XLNetForSequenceClassification(cfg, 2), cfg, wordpiece, tmp_path / "prefix", prefixed
    )
    with pytest.raises(CheckpointError, match="text_prefix"):
        export_hf(ckpt, tmp_path / "hf")


def test_cli_imports_and_refuses_by_name(
    hf_tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, src = hf_dir("XLNetLMHeadModel", hf_tokenizer, tmp_path / "hf")
    assert main(["convert", "--from-hf", str(src), str(tmp_path / "ours")]) == 0
    assert "llmos checkpoint written to" in capsys.readouterr().out
    assert isinstance(read_checkpoint(tmp_path / "ours").config, XLNetConfig)

    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"attn_type": "uni"}))
    assert main(["convert", "--from-hf", str(src), str(tmp_path / "uni")]) == 2
    err = capsys.readouterr().err
    assert "attn_type 'uni' is not supported" in err and err.count("\n") == 1
    assert not (tmp_path / "uni").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bi_data": True}, "bi_data True is not supported"),
        ({"same_length": True}, "same_length True is not supported"),
        ({"summary_type": "first"}, "summary_type 'first' is not supported"),
        ({"summary_activation": None}, "summary_activation None is not supported"),
        (
            {"architectures": ["XLNetForQuestionAnsweringSimple"]},
            "XLNetForQuestionAnsweringSimple is not supported",
        ),
    ],
)
def test_unsupported_options_are_refused(
    change: dict, message: str, hf_tokenizer, tmp_path: Path
) -> None:
    _, src = hf_dir(
        "XLNetForSequenceClassification", hf_tokenizer, tmp_path / "hf", id2label=LABELS
    )
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(CheckpointError, match=message):
        import_hf(src, tmp_path / "x")


def test_only_spiece_model_is_refused(hf_tokenizer, tmp_path: Path) -> None:
    _, src = hf_dir("XLNetLMHeadModel", hf_tokenizer, tmp_path / "hf")
    (src / "tokenizer.json").unlink()
    (src / "spiece.model").write_bytes(b"\x0a\x00")  # a SentencePiece protobuf, as shipped
    with pytest.raises(CheckpointError, match=r"only spiece\.model .* from tokenizer\.json"):
        import_hf(src, tmp_path / "x")


def test_a_tokenizer_without_cls_last_is_warned_about(
    hf_tokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, src = hf_dir("XLNetLMHeadModel", hf_tokenizer, tmp_path / "hf")
    tok = json.loads((src / "tokenizer.json").read_text())
    (src / "tokenizer.json").write_text(json.dumps(tok | {"post_processor": None}))
    with caplog.at_level(logging.WARNING, logger="llmos.convert"):
        import_hf(src, tmp_path / "x")
    assert "does not end a text with a <cls> token" in caplog.text


def test_an_untied_lm_head_is_refused(hf_tokenizer, tmp_path: Path) -> None:
    _, src = hf_dir("XLNetLMHeadModel", hf_tokenizer, tmp_path / "hf", tie_word_embeddings=False)
    with pytest.raises(CheckpointError, match=r"lm_loss\.weight differs from the word embeddings"):
        import_hf(src, tmp_path / "x")


def test_padded_vocabulary_imports_without_its_unused_rows(hf_tokenizer, tmp_path: Path) -> None:
    n = len(hf_tokenizer)
    torch.manual_seed(0)
    hf = perturbed(T.XLNetLMHeadModel(T.XLNetConfig(vocab_size=n + 5, pad_token_id=5, **SIZES)))
    hf.save_pretrained(str(tmp_path / "hf"))
    hf_tokenizer.save_pretrained(str(tmp_path / "hf"))
    ours = import_hf(tmp_path / "hf", tmp_path / "llmos")
    assert read_checkpoint(ours).config.vocab_size == n
    batch = encoded(hf_tokenizer, TEXTS)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = hf(**batch).logits[..., :n]
        got = llmos.load(ours).model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        )
    close(got.logits[real], expected[real])
