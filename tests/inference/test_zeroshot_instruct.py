"""Zero-shot by asking an instruction-tuned GPT (``method="instruct"``), on a random-init tiny
GPT: the labels' probabilities against a hand computation from the model's own logits over
prompt + answer + end-of-text (one plain forward each, no cache, no batching), several answers
per label, prior removal, the checkpoint's own template, long texts cut to fit, clear errors,
and ``llmos classify-zero --method instruct``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.checkpoint.task import Instruct
from llmos.cli import main
from llmos.config.model import GPTConfig
from llmos.data.clm import format_prompt
from llmos.inference.generator import GeneratorPipeline
from llmos.inference.instruct import encode_prompts
from llmos.inference.zeroshot import ZeroShotClassifier
from llmos.models.gpt import GPT
from llmos.text.tokenizer import load_tokenizer, special_ids

INSTRUCTION = "老师喜欢什么?"
TEXTS = ["今天我们学习经济", "去年老师参观城市。", "the city is big", "工人保护环境"]
ANSWERS = {"pos": ["市场"], "neg": ["技术"]}  # the random model's pick differs by text
POOL = ["现在学生研究历史。", "公司一直发展技术", "we like music", "农民支持教育"]
# The word embeddings' scale: at 0.2 the random model's answer log-probabilities differ by
# text (at 0.02 every logit is near 0; at 0.5 one answer wins everywhere by far).
STD = 0.2
TEMPLATE = "Q: {instruction}\nA:"  # a checkpoint's own templates (task.json)
TEMPLATE_INPUT = "Q: {instruction}\nText: {input}\nA:"


def tiny_gpt(bpe: Path, out: Path, spec: Instruct | None, max_position: int = 128) -> Path:
    """A seeded random-init 2-layer GPT over the BPE, saved as an instruction-tuned checkpoint
    (``spec`` None: a pretrained one); word embeddings at :data:`STD`, so that its answers'
    log-probabilities differ."""
    tok = load_tokenizer(bpe)
    cfg = GPTConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=max_position,
        dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, STD)
    return save_checkpoint(out, model, cfg, tok, spec)


@pytest.fixture(scope="module")
def ckpts(
    bpe_tokenizer: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("instruct-zero")
    return {
        "instruct": tiny_gpt(bpe_tokenizer, out / "instruct", Instruct()),
        "own": tiny_gpt(bpe_tokenizer, out / "own", Instruct(TEMPLATE, TEMPLATE_INPUT)),
        "short": tiny_gpt(bpe_tokenizer, out / "short", Instruct(), max_position=96),
        "base": tiny_gpt(bpe_tokenizer, out / "base", None),
        "e5": tiny_e5(tiny_tokenizer, out)["e5"],
    }


@pytest.fixture(scope="module")
def pipe(ckpts: dict[str, Path]) -> GeneratorPipeline:
    return llmos.load(ckpts["instruct"])


def prompt_ids(pipe: GeneratorPipeline, text: str) -> list[int]:
    """The instruction prompt of ``text`` (today's template), as token ids."""
    return pipe.tokenizer.encode(format_prompt(INSTRUCTION, text), add_special_tokens=False).ids


def answer_log_prob(
    pipe: GeneratorPipeline, prompt: list[int], answer: str, eos: bool = True
) -> float:
    """log p(answer, end-of-text | prompt): one plain forward over prompt + answer + eos, the
    log-softmax of the logits at each answer token summed (``eos`` False: without it)."""
    tokens = pipe.tokenizer.encode(answer, add_special_tokens=False).ids
    tokens += [special_ids(pipe.tokenizer)["eos"]] if eos else []
    with torch.no_grad():
        logits, _ = pipe.model(torch.tensor([prompt + tokens]))
    logp = logits[0].double().log_softmax(-1)  # (T, V)
    return sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(tokens))


def by_hand(
    pipe: GeneratorPipeline, texts: list[str], answers: dict[str, list[str]], **templates: str
) -> np.ndarray:
    """(n, k) each label's log-probability, normalised over the labels: per label, the log of
    the mean probability of its answers."""
    rows = []
    for text in texts:
        filled = format_prompt(INSTRUCTION, text, **templates)
        prompt = pipe.tokenizer.encode(filled, add_special_tokens=False).ids
        label = np.array(
            [
                np.log(np.mean([np.exp(answer_log_prob(pipe, prompt, a)) for a in words]))
                for words in answers.values()
            ]
        )
        rows.append(label - np.log(np.exp(label).sum()))
    return np.array(rows)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def scores(results: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[r["scores"][k] for k in labels] for r in results])


def instruct(pipe: object, labels: object = ANSWERS, **options: object) -> ZeroShotClassifier:
    options.setdefault("instruction", INSTRUCTION)
    return ZeroShotClassifier(pipe, labels, method="instruct", **options)  # type: ignore[arg-type]


def test_scores_are_the_softmax_of_the_answers_log_probabilities_by_hand(pipe) -> None:
    clf = instruct(pipe, batch_size=3)  # two batches, padded prompts of different lengths
    assert (clf.method, clf.labels, clf.temperature) == ("instruct", ("pos", "neg"), 1.0)
    want = softmax(by_hand(pipe, TEXTS, ANSWERS))
    got = clf.classify(TEXTS)
    assert np.allclose(scores(got, ["pos", "neg"]), want, atol=1e-5)
    assert [r["label"] for r in got] == [["pos", "neg"][i] for i in want.argmax(1)]
    assert all(set(r) == {"label", "score", "scores"} for r in got)
    # the random model does not score every text alike, and the batch size changes nothing
    assert np.ptp(want[:, 0]) > 1e-3
    one = instruct(pipe, batch_size=1).classify(TEXTS)
    assert np.allclose(scores(one, ["pos", "neg"]), want, atol=1e-5)
    assert clf.classify(TEXTS[0]) == clf.classify(TEXTS[:1])
    assert clf.classify([]) == []
    # the end-of-text token counts: an answer is scored as a whole one, not as a prefix
    prompt = prompt_ids(pipe, TEXTS[0])
    got_logp = pipe.answer_scores(INSTRUCTION, TEXTS[:1], ["城市的历史"])[0, 0]
    assert got_logp == pytest.approx(answer_log_prob(pipe, prompt, "城市的历史"), abs=1e-4)
    prefix = answer_log_prob(pipe, prompt, "城市的历史", eos=False)
    assert got_logp < prefix - 0.1


def test_several_answers_of_a_label_count_as_the_log_of_their_mean_probability(pipe) -> None:
    # answers of 2 to 11 tokens: padded rows in one forward
    answers = {"pos": ["市场", "文化艺术", "good"], "neg": ["城市的历史", "技术"], "none": ["经济"]}
    got = instruct(pipe, answers).classify(TEXTS)
    want = softmax(by_hand(pipe, TEXTS, answers))
    assert np.allclose(scores(got, list(answers)), want, atol=1e-5)
    # a string is one answer
    single = instruct(pipe, {"pos": "市场", "neg": "技术"}).classify(TEXTS)
    assert np.allclose(scores(single, ["pos", "neg"]), softmax(by_hand(pipe, TEXTS, ANSWERS)))


def test_unlabelled_texts_remove_each_labels_mean_log_probability(pipe) -> None:
    clf = instruct(pipe, unlabelled=POOL)
    prior = by_hand(pipe, POOL, ANSWERS).mean(axis=0)
    assert np.allclose(clf.prior, prior, atol=1e-6)
    want = softmax(by_hand(pipe, TEXTS, ANSWERS) - prior)
    assert np.allclose(scores(clf.classify(TEXTS), ["pos", "neg"]), want, atol=1e-5)


def test_the_checkpoints_own_template_is_the_prompt(ckpts) -> None:
    own = llmos.load(ckpts["own"])
    got = scores(instruct(own).classify(TEXTS), ["pos", "neg"])
    templates = {"template": TEMPLATE, "template_with_input": TEMPLATE_INPUT}
    assert np.allclose(got, softmax(by_hand(own, TEXTS, ANSWERS, **templates)), atol=1e-5)
    assert not np.allclose(got, softmax(by_hand(own, TEXTS, ANSWERS)), atol=1e-3)


def test_a_long_text_loses_its_end_so_that_prompt_and_answers_fit(ckpts, caplog) -> None:
    short = llmos.load(ckpts["short"])
    long = "今天我们学习经济" * 20
    answers = short.tokenizer.encode_batch(ANSWERS["pos"] + ANSWERS["neg"])
    room = 96 - max(len(a.ids) + 1 for a in answers)  # the longest answer and its eos
    (ids,), cut = encode_prompts(short.tokenizer, INSTRUCTION, [long], room)
    assert cut == 1 and len(ids) <= room
    # the longest start of the text that fits: one more character would not
    kept = next(n for n in range(len(long), 0, -1) if ids.tolist() == prompt_ids(short, long[:n]))
    assert len(prompt_ids(short, long[: kept + 1])) > room
    with caplog.at_level(logging.WARNING, logger="llmos.inference"):
        got = instruct(short).classify([long])
    assert "1 of 1 texts cut" in caplog.text
    want = softmax(by_hand(short, [long[:kept]], ANSWERS))
    assert np.allclose(scores(got, ["pos", "neg"]), want, atol=1e-5)
    with pytest.raises(llmos.LlmosError, match="leaves no room for the text"):
        instruct(short, instruction="老师喜欢什么" * 10).classify(["今天"])


def test_a_pretrained_gpt_works_with_a_warning(ckpts, caplog) -> None:
    base = llmos.load(ckpts["base"])
    with caplog.at_level(logging.WARNING, logger="llmos.inference"):
        got = instruct(base).classify(TEXTS)
    assert "is a pretrained GPT, not instruction-tuned" in caplog.text
    assert np.allclose(scores(got, ["pos", "neg"]), softmax(by_hand(base, TEXTS, ANSWERS)))


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        (ANSWERS, {"instruction": None}, "method instruct needs an instruction"),
        (ANSWERS, {"instruction": "  "}, "method instruct needs an instruction, e.g."),
        ({"pos": "经济", "neg": ""}, {}, "label 'neg''s answers: an empty text"),
        ({"pos": "经济", "neg": []}, {}, "label 'neg' has no answer"),
        ({"pos": "经济", "neg": ["城市", "经济"]}, {}, "'经济' is given to two labels"),
        ({"pos": "经济"}, {}, r"need at least two labels, got \['pos'\]"),
        (ANSWERS, {"temperature": 0}, "temperature must be > 0"),
        (ANSWERS, {"examples": {"pos": ["今天"]}}, "method instruct is zero-shot: it reads the"),
        (ANSWERS, {"patterns": "{text}[MASK]"}, "patterns are for method cloze, not instruct"),
    ],
)
def test_bad_input_is_a_clear_error(pipe, labels, options, message) -> None:
    examples = options.pop("examples", None)
    with pytest.raises(llmos.LlmosError, match=message):
        instruction = options.pop("instruction", INSTRUCTION)
        ZeroShotClassifier(
            pipe, labels, examples, method="instruct", instruction=instruction, **options
        )


def test_the_wrong_kind_of_checkpoint_says_what_to_use(ckpts, pipe) -> None:
    encoder = llmos.load(ckpts["e5"])
    with pytest.raises(llmos.LlmosError, match="method instruct asks an instruction-tuned GPT"):
        instruct(encoder)
    for method in ("similarity", "cloze"):
        with pytest.raises(llmos.LlmosError, match="with a GPT, use method instruct"):
            ZeroShotClassifier(
                pipe, ANSWERS, method=method, patterns="{text}[MASK]" if method == "cloze" else None
            )
    with pytest.raises(llmos.LlmosError, match="an instruction is for method instruct, not"):
        ZeroShotClassifier(encoder, ANSWERS, instruction=INSTRUCTION)
    with pytest.raises(llmos.LlmosError, match="method instruct reads texts, not vectors"):
        instruct(pipe).probabilities(np.zeros((1, 4)))


def test_classify_zero_cli_asks_the_gpt(ckpts, capsys) -> None:
    gpt = str(ckpts["instruct"])
    argv = ["--method", "instruct", "--instruction", INSTRUCTION]
    labels = ["--labels", "pos=市场", "neg=技术"]
    assert main(["classify-zero", gpt, *TEXTS, *argv, *labels, "--json"]) == 0
    want = llmos.zero_shot(gpt, ANSWERS, method="instruct", instruction=INSTRUCTION)
    expected = want.classify(TEXTS)
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert got == [{"text": t, **r} for t, r in zip(TEXTS, expected, strict=True)]
    assert main(["classify-zero", gpt, TEXTS[0], *argv, *labels]) == 0
    line = f"{expected[0]['score']:.3f}  {expected[0]['label']:<12} {TEXTS[0]}\n"
    assert capsys.readouterr().out == line


@pytest.mark.parametrize(
    ("model", "argv", "message"),
    [
        ("instruct", ["--method", "instruct"], "--method instruct needs --instruction"),
        ("instruct", ["--instruction", INSTRUCTION], "--instruction is for --method instruct"),
        (
            "e5",
            ["--method", "instruct", "--instruction", INSTRUCTION],
            "method instruct asks an instruction-tuned GPT",
        ),
        ("instruct", ["--method", "similarity"], "with a GPT, use method instruct"),
    ],
)
def test_classify_zero_cli_mistakes_exit_2(ckpts, capsys, model, argv, message) -> None:
    labels = ["--labels", "pos=经济", "neg=城市"]
    assert main(["classify-zero", str(ckpts[model]), TEXTS[0], *argv, *labels]) == 2
    assert message in capsys.readouterr().err
