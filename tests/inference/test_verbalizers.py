"""Verbalizers chosen from examples: a masked LM taught to say 学 for one label's texts and 市
for the other's is read back as those words; the scores against a hand computation from the
model's own log-probabilities; distinct words, the greedy order, several words per label;
only whole words as candidates; PET and ``llmos pet`` without verbalizers; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_zeroshot import tiny_e5

from llmos.checkpoint.io import read_checkpoint, save_checkpoint
from llmos.cli import main
from llmos.config.pet import PetConfig
from llmos.errors import LlmosError
from llmos.inference import cloze
from llmos.inference.verbalizers import search_verbalizers, word_candidates
from llmos.models.bert import BertForPreTraining
from llmos.train.pet import train_pet
from llmos.train.tasks.pet import ModelScorer

EXAMPLES = {
    "study": ["今天我们学习经济", "现在学生研究历史", "老师学习"],
    "city": ["去年老师参观城市", "the city is big", "公司一直发展技术"],
}
PATTERN = "{text}，总之很[MASK]。"


def scorer_of(path: Path) -> tuple[ModelScorer, object]:
    c = read_checkpoint(path)
    model = BertForPreTraining(c.config)
    model.load_state_dict(c.weights())
    model.eval()
    mask = c.tokenizer.token_to_id("[MASK]")
    return ModelScorer(model, c.tokenizer, mask, 0, 64), c.tokenizer


@pytest.fixture(scope="module")
def ckpts(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("verbalizers")
    found = tiny_e5(tiny_tokenizer, out)
    # Taught: the masked LM's head trained, at the pattern's mask, to predict 学 for the
    # study examples and 市 for the city ones (full-vocabulary cross-entropy).
    c = read_checkpoint(found["e5"])
    model = BertForPreTraining(c.config)
    model.load_state_dict(c.weights())
    mask = c.tokenizer.token_to_id("[MASK]")
    texts = [t for ts in EXAMPLES.values() for t in ts]
    filled = [cloze.fill(PATTERN, t, "[MASK]") for t in texts]
    inputs, positions, _ = cloze.encode_cloze(c.tokenizer, filled, mask, 64)
    target = [c.tokenizer.token_to_id(w) for w in ["学"] * 3 + ["市"] * 3]
    model.eval()  # no dropout: 6 examples are learned exactly
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = 0.0
        for ids, at, want in zip(inputs, positions, target, strict=True):
            out_ = model(torch.from_numpy(ids)[None], mlm_positions=torch.tensor([at]))
            loss = loss + torch.nn.functional.cross_entropy(out_.mlm_logits, torch.tensor([want]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    found["taught"] = save_checkpoint(out / "taught", model, c.config, c.tokenizer, c.task)
    return found


def test_a_masked_lm_taught_the_words_gives_them_back(ckpts) -> None:
    scorer, tok = scorer_of(ckpts["taught"])
    found = search_verbalizers(scorer, tok, EXAMPLES, PATTERN)
    assert found.verbalizers == {"study": ["学"], "city": ["市"]}
    assert all(s[0] > 0 for s in found.scores.values())  # likelier for its label than the other


def test_scores_are_the_own_minus_others_mean_log_probability(ckpts) -> None:
    scorer, tok = scorer_of(ckpts["e5"])  # random-init: arbitrary, but computable by hand
    found = search_verbalizers(scorer, tok, EXAMPLES, [PATTERN, "[MASK]：{text}"], per_label=2)
    words = word_candidates(tok)
    ids, names = list(words), list(words.values())
    texts = [t for ts in EXAMPLES.values() for t in ts]
    c = read_checkpoint(ckpts["e5"])
    mask = c.tokenizer.token_to_id("[MASK]")
    logp = 0
    for pattern in (PATTERN, "[MASK]：{text}"):  # by hand: each pattern's full log-softmax
        filled = [cloze.fill(pattern, t, "[MASK]") for t in texts]
        inputs, positions, _ = cloze.encode_cloze(c.tokenizer, filled, mask, 64)
        rows = []
        for x, at in zip(inputs, positions, strict=True):
            with torch.no_grad():
                out = scorer.model(torch.from_numpy(x)[None], mlm_positions=torch.tensor([at]))
            rows.append(out.mlm_logits[0].double().log_softmax(-1).numpy()[ids])
        logp = logp + np.stack(rows)
    logp = logp / 2
    own = {"study": logp[:3].mean(0), "city": logp[3:].mean(0)}
    ratio = {"study": own["study"] - own["city"], "city": own["city"] - own["study"]}
    chosen = [w for ws in found.verbalizers.values() for w in ws]
    assert len(chosen) == 4 and len(set(chosen)) == 4  # distinct across labels and rounds
    for label, ws in found.verbalizers.items():
        for w, score, mean in zip(ws, found.scores[label], found.log_probs[label], strict=True):
            j = names.index(w)
            assert score == pytest.approx(ratio[label][j], abs=1e-5)
            assert mean == pytest.approx(own[label][j], abs=1e-5)
    # The greedy order: the first pair taken is the best ratio inside either label's
    # shortlist (its `shortlist` words of highest own mean log-probability).
    n = found.shortlist
    assert n in found.tried and found.tried[n] == max(found.tried.values())
    inside = [ratio[lab][np.argsort(-own[lab])[:n]].max() for lab in ratio]
    assert max(inside) == pytest.approx(max(s[0] for s in found.scores.values()), abs=1e-5)


def test_candidates_are_whole_words_the_tokenizer_reads_back(ckpts) -> None:
    tok = read_checkpoint(ckpts["e5"]).tokenizer
    words = word_candidates(tok)
    assert "学" in words.values() and "city" in words.values()
    assert all(w.isalpha() and not w.startswith("##") for w in words.values())
    vocab = tok.get_vocab()
    assert "[MASK]" in vocab and "[MASK]" not in words.values()
    assert all(cloze.word_piece(tok, w) == pid for pid, w in words.items())


def test_pet_without_verbalizers_chooses_them(ckpts, tmp_path: Path, capsys) -> None:
    cfg = PetConfig(
        steps=4, batch_size=4, lr=1e-3, distill_steps=2, distill_batch=4, progress=False
    )
    pool = ["城市很大", "学习历史", "我们喜欢音乐"]
    result = train_pet(ckpts["taught"], EXAMPLES, pool, PATTERN, None, tmp_path / "o", cfg)
    assert result.verbalizers_found and result.verbalizers == {"study": ["学"], "city": ["市"]}
    meta = json.loads((result.checkpoint / "task.json").read_text())["pet"]
    assert meta["verbalizers"] == result.verbalizers and meta["verbalizers_found"] is True

    shots = tmp_path / "shots.jsonl"
    shots.write_text(
        "".join(
            json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n"
            for lab, ts in EXAMPLES.items()
            for t in ts
        )
    )
    (tmp_path / "pool.txt").write_text("\n".join(pool) + "\n")
    argv = ["pet", str(ckpts["taught"]), "--examples", str(shots)]
    argv += ["--unlabelled", str(tmp_path / "pool.txt"), "--pattern", PATTERN]
    argv += ["--steps", "2", "--distill-steps", "1", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    assert "verbalizers chosen from the examples: study=学, city=市" in capsys.readouterr().out


def test_errors_name_what_is_wrong(ckpts) -> None:
    scorer, tok = scorer_of(ckpts["e5"])
    with pytest.raises(LlmosError, match="mask slot"):
        search_verbalizers(scorer, tok, EXAMPLES, "{text} no slot")
    with pytest.raises(LlmosError, match=r"no examples of \['city'\]"):
        search_verbalizers(scorer, tok, {"study": ["学习"], "city": []}, PATTERN)
    with pytest.raises(LlmosError, match="whole-word pieces"):
        search_verbalizers(scorer, tok, EXAMPLES, PATTERN, per_label=10_000)
