"""MLM data: masking statistics, NSP pairs, packing, resumable stream."""

import numpy as np
import pytest

from llmos.data.corpus import TokenizedCorpus
from llmos.data.mlm import (
    MLMBatches,
    SpecialIds,
    collate,
    mask_tokens,
    nsp_instances,
    packed_instances,
)

SP = SpecialIds(pad=0, cls=2, sep=3, mask=4, vocab_size=1000, first_normal=5)


def make_corpus(n_docs: int = 40, seed: int = 0) -> TokenizedCorpus:
    """Document d's tokens all lie in [10 + 20 d, 30 + 20 d): a token tells its document."""
    rng = np.random.default_rng(seed)
    ids, sent_bounds, doc_bounds = [], [0], [0]
    for d in range(n_docs):
        n_sent = int(rng.integers(1, 8))
        for _ in range(n_sent):
            length = int(rng.integers(1, 25))
            ids.extend(rng.integers(10 + 20 * d, 30 + 20 * d, size=length).tolist())
            sent_bounds.append(len(ids))
        doc_bounds.append(doc_bounds[-1] + n_sent)
    return TokenizedCorpus(
        np.array(ids, dtype=np.int32), np.array(sent_bounds), np.array(doc_bounds)
    )


def test_masking_rates_match_bert_80_10_10() -> None:
    rng = np.random.default_rng(0)
    selected = masked = randomized = kept = candidates = 0
    for _ in range(3000):
        n = int(rng.integers(5, 120))
        ids = np.array(
            [SP.cls, *rng.integers(SP.first_normal, SP.vocab_size, n), SP.sep, SP.pad, SP.pad]
        )
        out, pos, labels = mask_tokens(ids, SP, 0.15, rng)
        assert np.array_equal(ids[pos], labels)
        assert not np.isin(pos, [0, n + 1, n + 2, n + 3]).any(), "special tokens are never masked"
        candidates += n
        selected += pos.size
        masked += int((out[pos] == SP.mask).sum())
        changed = (out[pos] != SP.mask) & (out[pos] != labels)
        randomized += int(changed.sum())
        kept += int((out[pos] == labels).sum())
        assert ((out[pos][changed] >= SP.first_normal) & (out[pos][changed] < SP.vocab_size)).all()
        unselected = np.setdiff1d(np.arange(ids.size), pos)
        assert np.array_equal(out[unselected], ids[unselected])
    # Binomial bounds at ~5 standard deviations.
    rate = selected / candidates
    assert abs(rate - 0.15) < 5 * np.sqrt(0.15 * 0.85 / candidates), rate
    assert abs(masked / selected - 0.8) < 5 * np.sqrt(0.8 * 0.2 / selected)
    # A random token equals the original with probability ~1/995: "kept" is ~10 % + that.
    assert abs(randomized / selected - 0.1) < 5 * np.sqrt(0.1 * 0.9 / selected) + 0.001
    assert abs(kept / selected - 0.1) < 5 * np.sqrt(0.1 * 0.9 / selected) + 0.001


def test_protected_ids_are_never_picked_and_the_rest_is_drawn_as_before() -> None:
    # A cloze pattern's own [MASK] (PET's auxiliary MLM loss): kept, never a target.
    ids = np.array([SP.cls, *range(10, 40), SP.mask, *range(40, 50), SP.sep])
    at = int(np.flatnonzero(ids == SP.mask)[0])
    for seed in range(300):
        out, pos, _ = mask_tokens(ids, SP, 0.5, np.random.default_rng(seed), (SP.mask,))
        assert at not in pos and out[at] == SP.mask
    # Nothing protected: the same draw as the plain call (a text without the id, likewise).
    plain = ids[ids != SP.mask]
    for seed in range(20):
        a = mask_tokens(plain, SP, 0.15, np.random.default_rng(seed))
        b = mask_tokens(plain, SP, 0.15, np.random.default_rng(seed), (SP.mask,))
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_masks_are_dynamic_and_deterministic() -> None:
    corpus = make_corpus()
    insts = packed_instances(corpus, SP, 64, np.random.default_rng(0))[:8]
    a = collate(insts, SP, 0.15, seed=1, epoch=0)
    b = collate(insts, SP, 0.15, seed=1, epoch=0)
    c = collate(insts, SP, 0.15, seed=1, epoch=1)
    assert np.array_equal(a["input_ids"], b["input_ids"])
    assert not np.array_equal(a["mlm_positions"], c["mlm_positions"]), "redrawn in a new epoch"
    # The mask of an instance does not depend on the batch it is in.
    d = collate(insts[4:], SP, 0.15, seed=1, epoch=0)
    T_a, T_d = a["input_ids"].shape[1], d["input_ids"].shape[1]
    row_a = a["input_ids"][4, :T_d] if T_a >= T_d else None
    assert row_a is not None and np.array_equal(
        row_a[: insts[4].ids.size], d["input_ids"][0, : insts[4].ids.size]
    )


def test_nsp_pairs_are_half_random_and_true_pairs_are_contiguous() -> None:
    corpus = make_corpus(200)
    insts = nsp_instances(corpus, SP, 48, 0.1, np.random.default_rng(3))
    labels = np.array([i.nsp_label for i in insts])
    assert abs(labels.mean() - 0.5) < 5 * np.sqrt(0.25 / labels.size)
    for inst in insts:
        ids = inst.ids
        assert ids.size <= 48 and ids[0] == SP.cls and ids[-1] == SP.sep
        assert ids[inst.b_start - 1] == SP.sep
        a, b = ids[1 : inst.b_start - 1], ids[inst.b_start : -1]
        assert a.size and b.size
        doc_a, doc_b = set((a - 10) // 20), set((b - 10) // 20)
        assert len(doc_a) == 1 and len(doc_b) == 1
        assert (doc_a == doc_b) == (inst.nsp_label == 0)


def test_collate_masks_padding_and_token_types() -> None:
    corpus = make_corpus(50)
    insts = nsp_instances(corpus, SP, 48, 0.5, np.random.default_rng(0))[:6]
    batch = collate(insts, SP, 0.15, seed=0, epoch=0)
    lengths = [i.ids.size for i in insts]
    assert batch["input_ids"].shape == (6, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for row, inst in enumerate(insts):
        types = batch["token_type_ids"][row]
        assert types[: inst.b_start].sum() == 0 and types[inst.b_start : lengths[row]].eq(1).all()
    T = batch["input_ids"].shape[1]
    rows = batch["mlm_positions"] // T
    cols = batch["mlm_positions"] % T
    assert (cols.numpy() < np.array(lengths)[rows.numpy()]).all(), "no masked position on padding"
    assert batch["num_tokens"].item() == sum(lengths)


def test_packing_keeps_every_token_once_and_whole_sentences() -> None:
    corpus = make_corpus(60)
    insts = packed_instances(corpus, SP, 64, np.random.default_rng(0))
    body = np.concatenate([i.ids[1:-1] for i in insts])
    body = body[body != SP.sep]
    assert sorted(body.tolist()) == sorted(corpus.ids.tolist())
    assert all(i.ids.size <= 64 and i.ids[0] == SP.cls and i.ids[-1] == SP.sep for i in insts)
    fill = np.mean([i.ids.size for i in insts]) / 64
    assert fill > 0.8, fill


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm"])
def test_stream_resumes_at_the_same_batch(objective: str) -> None:
    kw = dict(
        objective=objective,
        max_length=48,
        short_seq_prob=0.1,
        mask_prob=0.15,
        global_batch=8,
        seed=5,
    )
    a = MLMBatches(make_corpus(80), SP, **kw)
    it = iter(a)
    for _ in range(30):  # crosses at least one epoch boundary
        next(it)
    state = a.state()
    expected = [next(it) for _ in range(5)]
    b = MLMBatches(make_corpus(80), SP, **kw)
    b.load_state(state)
    got = [x for x, _ in zip(b, range(5), strict=False)]
    assert state["epoch"] >= 1
    for (e1, i1), (e2, i2) in zip(expected, got, strict=True):
        assert e1 == e2 and [i.uid for i in i1] == [i.uid for i in i2]
        assert all(np.array_equal(x.ids, y.ids) for x, y in zip(i1, i2, strict=True))
