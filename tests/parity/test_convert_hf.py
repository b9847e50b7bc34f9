"""`llmos convert` against transformers: tiny random-init BERT, RoBERTa and GPT-2 models of
each head class are imported (outputs equal HF's), exported (AutoModel loads them with the same
outputs) and imported again (weights identical)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from tokenizers.implementations import ByteLevelBPETokenizer

from llmos.checkpoint.io import read_checkpoint, read_weights, save_checkpoint
from llmos.checkpoint.task import Tagging
from llmos.config.model import GPTConfig
from llmos.errors import CheckpointError
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.generate import GenerationConfig, generate_ids
from llmos.inference.load import load_pipeline
from llmos.models.gpt import GPT
from llmos.recipes.convert import export_hf, import_hf
from llmos.text.tokenizer import load_tokenizer, special_ids, train_tokenizer

T = pytest.importorskip("transformers")

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def toks(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("toks")
    wordpiece = load_tokenizer(
        train_tokenizer("wordpiece", [tiny_corpus / "train.txt"], 200, d / "wp")
    )
    gpt = load_tokenizer(train_tokenizer("bpe", [tiny_corpus / "train.txt"], 300, d / "bpe"))
    rb = ByteLevelBPETokenizer()
    rb.train(
        [str(tiny_corpus / "train.txt")],
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    roberta = rb._tokenizer
    roberta.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return {"bert": wordpiece, "roberta": roberta, "gpt2": gpt}


def hf_dir(model, tok, path: Path, **special: str) -> Path:
    model.save_pretrained(str(path))
    T.PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(str(path))
    return path


def perturb(model) -> None:
    """Non-trivial LayerNorms and biases (the init leaves them at 1 and 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def batch(vocab: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 8:], mask[1, 8:] = pad, 0  # right padding
    ids[2, 5:], mask[2, 5:] = pad, 0
    return ids, mask


ENCODERS = [
    ("bert", "BertForPreTraining", "mlm+nsp"),
    ("bert", "BertForMaskedLM", "mlm"),
    ("bert", "BertModel", "none"),
    ("bert", "BertForSequenceClassification", "classification"),
    ("bert", "BertForTokenClassification", "tagging"),
    ("roberta", "RobertaForMaskedLM", "mlm"),
    ("roberta", "RobertaModel", "none"),
    ("roberta", "RobertaForTokenClassification", "tagging"),
]


def hf_out(model, ids, mask, kind: str) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    if kind == "mlm+nsp":
        return [out.prediction_logits, out.seq_relationship_logits]
    if kind == "none":
        return [out.last_hidden_state]
    return [out.logits]


def ours_out(pipe: EncoderPipeline, ids, mask, kind: str) -> list[torch.Tensor]:
    with torch.no_grad():
        if kind in ("classification", "tagging"):
            return [pipe.model(ids, None, mask)]
        out = pipe.model(ids, None, mask)
    if kind == "mlm+nsp":
        return [out.mlm_logits, out.nsp_logits]
    return [out.mlm_logits] if kind == "mlm" else [out.hidden]


@pytest.mark.parametrize(("family", "cls", "kind"), ENCODERS)
def test_encoders_import_export_round_trip(family, cls, kind, toks, tmp_path: Path) -> None:
    tok = toks[family]
    pad = 1 if family == "roberta" else 0
    extra = (
        {"id2label": {0: "O", 1: "B-PER", 2: "I-PER"}}
        if kind in ("classification", "tagging")
        else {}
    )
    if family == "roberta":
        config = T.RobertaConfig(
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=40,
            pad_token_id=1,
            type_vocab_size=1,
            **SIZES,
            **extra,
        )
        special = {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        }
    else:
        config = T.BertConfig(
            vocab_size=tok.get_vocab_size(), max_position_embeddings=40, **SIZES, **extra
        )
        special = {
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "mask_token": "[MASK]",
        }
    torch.manual_seed(0)
    model = getattr(T, cls)(config).eval()
    perturb(model)
    src = hf_dir(model, tok, tmp_path / "hf", **special)

    ours = import_hf(src, tmp_path / "llmos")
    pipe = load_pipeline(ours)
    ids, mask = batch(config.vocab_size, pad)
    real = mask.bool()
    for a, b in zip(ours_out(pipe, ids, mask, kind), hf_out(model, ids, mask, kind), strict=True):
        if a.dim() == 3:  # per token: padded positions are not compared
            a, b = a[real], b[real]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    ckpt = read_checkpoint(ours)
    cfg = ckpt.config
    assert cfg.model_type == family and (cfg.heads == kind or kind in ("classification", "tagging"))
    if kind == "tagging":
        assert ckpt.task == Tagging(
            labels=("O", "B-PER", "I-PER"),
            scheme="bio",
            max_length=40 - (2 if family == "roberta" else 0),
        )

    exported = export_hf(ours, tmp_path / "export")
    back = getattr(T, cls).from_pretrained(str(exported)).eval()
    for a, b in zip(hf_out(back, ids, mask, kind), hf_out(model, ids, mask, kind), strict=True):
        if a.dim() == 3:
            a, b = a[real], b[real]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    auto = T.AutoTokenizer.from_pretrained(str(exported))
    assert auto("今天我们学习经济。")["input_ids"] == tok.encode("今天我们学习经济。").ids

    again = import_hf(exported, tmp_path / "again")
    a, b = read_weights(ours), read_weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gpt2_import_export_round_trip(toks, tmp_path: Path) -> None:
    tok = toks["gpt2"]
    config = T.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=48, n_embd=32, n_layer=2, n_head=4
    )
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(config).eval()
    perturb(model)
    src = hf_dir(model, tok, tmp_path / "hf", eos_token="<|endoftext|>")
    ours = import_hf(src, tmp_path / "llmos")
    pipe = load_pipeline(ours)
    ids = torch.randint(2, config.vocab_size, (2, 15))
    with torch.no_grad():
        torch.testing.assert_close(pipe.model(ids)[0], model(ids).logits, atol=1e-5, rtol=1e-4)
    exported = export_hf(ours, tmp_path / "export")
    back = T.AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-4)
    a, b = read_weights(ours), read_weights(import_hf(exported, tmp_path / "again"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_legacy_names_and_pytorch_bin(toks, tmp_path: Path) -> None:
    """A TF-era BERT: LayerNorm gamma/beta, weights in pytorch_model.bin, only vocab.txt."""
    tok = toks["bert"]
    config = T.BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=40, **SIZES)
    torch.manual_seed(1)
    model = T.BertForPreTraining(config).eval()
    perturb(model)
    modern = hf_dir(model, tok, tmp_path / "modern", cls_token="[CLS]", sep_token="[SEP]")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    sd = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in model.state_dict().items()
    }
    torch.save(sd, legacy / "pytorch_model.bin")
    (legacy / "config.json").write_text((modern / "config.json").read_text())
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (legacy / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    a = read_weights(import_hf(modern, tmp_path / "a"))
    b = read_weights(import_hf(legacy, tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_tokenizer(tmp_path / "b").encode("今天 we").ids == tok.encode("今天 we").ids


def test_bad_inputs_name_the_problem(toks, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a Hugging Face model directory"):
        import_hf(tmp_path, tmp_path / "x")
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(
        CheckpointError,
        match=r"model_type 't5' is not supported \(supported: bert, roberta, gpt2, xlnet\)",
    ):
        import_hf(t5, tmp_path / "x")
    tok = toks["bert"]
    config = T.BertConfig(vocab_size=tok.get_vocab_size() - 3, max_position_embeddings=40, **SIZES)
    src = hf_dir(T.BertModel(config), tok, tmp_path / "mismatch")
    with pytest.raises(
        CheckpointError, match=r"tokenizer has \d+ tokens but the embeddings have only \d+ rows"
    ):
        import_hf(src, tmp_path / "x")
    config = T.BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=40, **SIZES)
    model = T.BertModel(config)
    src = hf_dir(model, tok, tmp_path / "extra")
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src / "model.safetensors"))
    sd["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"layer\.0\.attention\.self\.rotary\.weight"):
        import_hf(src, tmp_path / "x")


def test_padded_vocabulary_imports_without_its_unused_rows(toks, tmp_path: Path) -> None:
    """HF allows more embedding rows than tokens (padded vocabularies): the rows no token id
    reaches are dropped, and every output over the real vocabulary stays the same."""
    tok = toks["bert"]
    n = tok.get_vocab_size()
    config = T.BertConfig(vocab_size=n + 5, max_position_embeddings=40, **SIZES)
    torch.manual_seed(0)
    model = T.BertForMaskedLM(config).eval()
    perturb(model)
    ours = import_hf(hf_dir(model, tok, tmp_path / "hf"), tmp_path / "llmos")
    assert read_checkpoint(ours).config.vocab_size == n
    pipe = load_pipeline(ours)
    ids, mask = batch(n, 0)
    real = mask.bool()
    a = ours_out(pipe, ids, mask, "mlm")[0][real]
    b = hf_out(model, ids, mask, "mlm")[0][real][:, :n]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_exported_gpt_stops_generating_where_llmos_does(toks, tmp_path: Path) -> None:
    """The exported config names the tokenizer's own end-of-text and pad ids (not GPT-2's
    50256, which a small vocabulary lacks), so HF ``generate`` stops where llmos does."""
    tok = toks["gpt2"]
    ids = special_ids(tok)
    eos, pad = ids["eos"], ids["pad"]
    assert eos is not None and pad is not None
    cfg = GPTConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position=48,
        dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():  # larger block weights than the init's: a varied greedy path
        for name, p in model.named_parameters():
            if name.startswith("transformer.h.") and p.dim() == 2:
                p.mul_(10)
    prompt = tok.encode("今天我们学习经济。").ids
    # HF's own defaults: no repetition penalty, no n-gram ban (llmos's are on by default).
    greedy = GenerationConfig(max_new_tokens=16, repetition_penalty=1.0, no_repeat_ngram_size=0)
    free = generate_ids(model, [prompt], greedy, eos_id=None)[0]
    # Make the k-th new token the end of text: swapping two rows of the tied embedding relabels
    # two ids, so the greedy path is the same with `t` and `eos` exchanged.
    k = next(
        i
        for i in range(2, len(free))
        if free[i] not in (*prompt, *free[:i], eos, pad) and eos not in (*prompt, *free[:i])
    )
    t = free[k]
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[[eos, t]] = wte[[t, eos]]
    ckpt = save_checkpoint(tmp_path / "gpt", model, cfg, tok)
    ours = generate_ids(load_pipeline(ckpt).model, [prompt], greedy, eos_id=eos)[0]
    assert ours == [*free[:k], eos]  # llmos stops at the end of text, which it keeps

    exported = export_hf(ckpt, tmp_path / "hf")
    config = json.loads((exported / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        eos,
        eos,
        pad,
    )
    hf = T.AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    assert hf.generation_config.eos_token_id == eos
    out = hf.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=16,
        do_sample=False,
    )
    assert out[0, len(prompt) :].tolist() == ours
    auto = T.AutoTokenizer.from_pretrained(str(exported))
    assert (auto.eos_token_id, auto.pad_token_id) == (eos, pad)
