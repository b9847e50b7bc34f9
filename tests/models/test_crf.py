"""The linear-chain CRF against brute-force enumeration of every path on tiny cases, and
against pytorch-crf (the field's maintained CRF) and its own log-sum-exp recursion on label
sets as large as joint segmentation + POS."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchcrf

from llmos.data.tagging import allowed_transitions
from llmos.models.crf import CRF

BIO = ["O", "B-X", "I-X", "B-Y"]  # K = 4, with constraints (I-X only after B-X / I-X)
BMES = ["B", "M", "E", "S"]  # bare word-segmentation labels, no O


def random_crf(labels: list[str] | None, K: int, scheme: str = "bio", seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    if labels is None:
        crf = CRF(K)
    else:
        crf = CRF(K, *(torch.from_numpy(m) for m in allowed_transitions(labels, scheme)))
    with torch.no_grad():  # learned scores away from their zero initialisation
        for p in crf.parameters():
            p.normal_()
    return crf


def path_score(
    crf: CRF, em: torch.Tensor, path: tuple[int, ...], open_start: bool, open_end: bool
) -> float:
    """A path's score with -inf for anything a constraint forbids (the exact definition)."""
    tr, st, en = (x.detach().double() for x in (crf.transitions, crf.start, crf.end))
    ok = crf.allowed
    s = float(em[0, path[0]])
    if not open_start:
        s += float(st[path[0]]) if crf.start_allowed[path[0]] else -np.inf
    for t, (a, b) in enumerate(itertools.pairwise(path), start=1):
        s += float(tr[a, b]) + float(em[t, b]) if ok[a, b] else -np.inf
    if not open_end:
        s += float(en[path[-1]]) if crf.end_allowed[path[-1]] else -np.inf
    return s


def brute(
    crf: CRF,
    em: torch.Tensor,
    labels: list[int] | None = None,
    open_start: bool = False,
    open_end: bool = False,
) -> tuple[float, float, tuple[int, ...], np.ndarray]:
    """log Z, log Z over the paths through ``labels`` (-100: any), the best path, and the
    (T, K) marginals, by enumerating all K^T paths."""
    T, K = em.shape
    paths = list(itertools.product(range(K), repeat=T))
    scores = np.array([path_score(crf, em, p, open_start, open_end) for p in paths])
    log_z = float(np.logaddexp.reduce(scores))
    gold = log_z
    if labels is not None:
        fits = np.array(
            [all(g in (-100, y) for g, y in zip(labels, p, strict=True)) for p in paths]
        )
        gold = float(np.logaddexp.reduce(scores[fits]))
    marg = np.zeros((T, K))
    prob = np.exp(scores - log_z)
    for p, w in zip(paths, prob, strict=True):
        marg[np.arange(T), p] += w
    return log_z, gold, paths[int(scores.argmax())], marg


CASES = [(None, 3, "bio"), (BIO, 4, "bio"), (BMES, 4, "bmes")]


@pytest.mark.parametrize(("labels", "K", "scheme"), CASES)
def test_log_partition_nll_viterbi_and_marginals_match_brute_force(labels, K, scheme) -> None:
    crf = random_crf(labels, K, scheme)
    lengths = [5, 3, 1, 0, 4]
    T = max(lengths)
    torch.manual_seed(1)
    em = torch.randn(len(lengths), T, K) * 2
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    gen = torch.Generator().manual_seed(2)
    gold = torch.randint(0, K, (len(lengths), T), generator=gen)
    gold[0, 2] = gold[4, 0] = -100  # marginalized positions
    gold[~mask] = -100
    log_z = crf.log_partition(em, mask)
    nll = crf.nll(em, gold, mask)
    path = crf.decode(em, mask)
    marg = crf.marginals(em, mask).exp().detach()
    for b, L in enumerate(lengths):
        if L == 0:
            assert log_z[b] == 0 and nll[b] == 0 and (path[b] == -1).all()
            continue
        ez, eg, best, emarg = brute(crf, em[b, :L].double(), gold[b, :L].tolist())
        assert log_z[b].item() == pytest.approx(ez, abs=1e-4)
        want = ez - eg if np.isfinite(eg) else None
        if want is not None and want < 1e3:  # the gold path is allowed
            assert nll[b].item() == pytest.approx(want, abs=1e-4)
        else:
            assert nll[b].item() > 1e3  # a disallowed gold path costs NEG, never NaN
        assert tuple(path[b, :L].tolist()) == best
        assert (path[b, L:] == -1).all()
        np.testing.assert_allclose(marg[b, :L].numpy(), emarg, atol=1e-5)


@pytest.mark.parametrize(("open_start", "open_end"), [(True, False), (False, True), (True, True)])
def test_open_window_edges_drop_start_and_end_scores_and_constraints(open_start, open_end) -> None:
    crf = random_crf(BIO, 4)
    torch.manual_seed(3)
    em = torch.randn(1, 4, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    gold = torch.tensor([[2, 2, 0, 1]])  # opens inside a span: only valid with an open start
    kw = {"open_start": torch.tensor([open_start]), "open_end": torch.tensor([open_end])}
    ez, eg, _, _ = brute(crf, em[0].double(), gold[0].tolist(), open_start, open_end)
    assert crf.log_partition(em, mask, **kw).item() == pytest.approx(ez, abs=1e-4)
    nll = crf.nll(em, gold, mask, **kw).item()
    assert nll == pytest.approx(ez - eg, abs=1e-4) if open_start else nll > 1e3


def test_decode_never_produces_a_disallowed_transition() -> None:
    for labels, scheme in ((BIO, "bio"), (BMES, "bmes")):
        allowed, start, end = allowed_transitions(labels, scheme)
        crf = random_crf(labels, len(labels), scheme, seed=4)
        with torch.no_grad():  # learned scores pushing hard towards forbidden moves
            crf.transitions.copy_(torch.from_numpy(np.where(allowed, -5.0, 50.0)))
        torch.manual_seed(5)
        em = torch.randn(64, 12, len(labels)) * 10
        mask = torch.arange(12)[None, :] < torch.randint(1, 13, (64,))[:, None]
        for row, m in zip(crf.decode(em, mask), mask, strict=True):
            p = row[m].tolist()
            assert start[p[0]] and end[p[-1]]
            assert all(allowed[a, b] for a, b in itertools.pairwise(p))


def test_constrained_scores_get_no_gradient_and_learned_ones_do() -> None:
    crf = random_crf(BIO, 4)
    torch.manual_seed(6)
    em = torch.randn(3, 5, 4, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    gold = torch.tensor([[1, 2, 2, 0, 3], [0, 0, 1, 0, 0], [3, 0, 1, 2, 0]])
    crf.nll(em, gold, mask).sum().backward()
    g = crf.transitions.grad
    assert g is not None and em.grad is not None
    assert (g[~crf.allowed] == 0).all() and (g[crf.allowed].abs() > 0).all()
    assert (crf.start.grad[~crf.start_allowed] == 0).all()
    assert crf.end.grad.abs().sum() > 0


def test_training_on_a_toy_sequence_task_lowers_the_loss_and_learns_transitions() -> None:
    """Emissions that cannot tell B-X from B-Y after X: only the transitions can."""
    torch.manual_seed(7)
    K = 3  # labels a, b, c; the rule: b always follows a, c follows b, a follows c
    gold = torch.tensor([[0, 1, 2, 0, 1], [1, 2, 0, 1, 2], [2, 0, 1, 2, 0]])
    em = torch.zeros(3, 5, K)
    em[:, 0] = torch.nn.functional.one_hot(gold[:, 0], K).float() * 3  # only t=0 is visible
    mask = torch.ones(3, 5, dtype=torch.bool)
    crf = CRF(K)
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    losses = []
    for _ in range(60):
        loss = crf.nll(em, gold, mask).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert torch.equal(crf.decode(em, mask), gold)


def test_the_loss_stays_fp32_inside_a_bf16_autocast_region() -> None:
    """A training step under bf16 autocast: the CRF's products must not be rounded to bf16."""
    labels = pos_labels(44)
    crf = random_crf(labels, len(labels), "bmes", seed=12)
    torch.manual_seed(13)
    em = torch.randn(4, 50, len(labels)) * 4
    mask = torch.ones(4, 50, dtype=torch.bool)
    gold = crf.decode(em, mask)  # a valid path per row
    want = crf.nll(em, gold, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = crf.nll(em, gold, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)


def test_bf16_emissions_and_a_checkpoint_holds_only_the_learned_scores() -> None:
    crf = random_crf(BIO, 4)
    assert sorted(crf.state_dict()) == ["end", "start", "transitions"]
    em = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert torch.equal(crf.decode(em.bfloat16(), mask), crf.decode(em.bfloat16().float(), mask))


def pos_labels(n_types: int) -> list[str]:
    """BMES labels over ``n_types`` word classes: the shape of the joint seg + POS label set."""
    return [f"{p}-t{i}" for i in range(n_types) for p in "BMES"]


def test_loss_gradients_and_viterbi_match_pytorch_crf_on_a_large_label_set() -> None:
    """No constraints (pytorch-crf has none): the same learned scores give the same per-row
    log-likelihood, the same gradients and the same best paths."""
    K, lengths = 64, [40, 17, 1, 33, 40, 5]
    ours = random_crf(None, K, seed=8)
    ref = torchcrf.CRF(K, batch_first=True)
    with torch.no_grad():
        ref.transitions.copy_(ours.transitions)
        ref.start_transitions.copy_(ours.start)
        ref.end_transitions.copy_(ours.end)
    torch.manual_seed(9)
    T = max(lengths)
    em = (torch.randn(len(lengths), T, K) * 3).requires_grad_()
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    gold = torch.randint(0, K, (len(lengths), T))
    nll = ours.nll(em, gold.masked_fill(~mask, -100), mask)
    want = -ref(em, gold, mask, reduction="none")
    torch.testing.assert_close(nll, want, rtol=1e-5, atol=1e-3)
    grads = torch.autograd.grad(nll.sum(), [em, ours.transitions, ours.start, ours.end])
    wants = torch.autograd.grad(
        want.sum(), [em, ref.transitions, ref.start_transitions, ref.end_transitions]
    )
    for g, w in zip(grads, wants, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    path = ours.decode(em.detach(), mask)
    for row, m, best in zip(path, mask, ref.decode(em.detach(), mask), strict=True):
        assert row[m].tolist() == best


def test_exp_space_forward_equals_the_log_sum_exp_form_under_constraints() -> None:
    """The fast recursion against ``exact=True`` with 176 BMES-POS labels, windows with open
    edges and partly labelled rows: log Z, NLL and every gradient."""
    labels = pos_labels(44)
    K = len(labels)
    crf = random_crf(labels, K, "bmes", seed=10)
    torch.manual_seed(11)
    lengths = [60, 60, 31, 2, 0, 47]
    B, T = len(lengths), max(lengths)
    em = (torch.randn(B, T, K) * 4).requires_grad_()
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    open_start = torch.tensor([True, False, False, False, False, True])
    open_end = torch.tensor([True, True, False, False, False, False])
    # Gold paths that are valid BMES sequences: words of 1-3 characters, random classes.
    gold = torch.full((B, T), -100)
    for b, L in enumerate(lengths):
        t = 0
        while t < L:
            n, c = min(int(torch.randint(1, 4, ())), L - t), int(torch.randint(0, 44, ()))
            tags = ["S"] if n == 1 else ["B"] + ["M"] * (n - 2) + ["E"]
            for i, p in enumerate(tags):
                gold[b, t + i] = labels.index(f"{p}-t{c}")
            t += n
    gold[1, 10:14] = gold[5, 0] = -100  # marginalized positions
    kw = {"open_start": open_start, "open_end": open_end}
    fast = crf.log_partition(em, mask, **kw)
    exact = crf.log_partition(em, mask, **kw, exact=True)
    torch.testing.assert_close(fast, exact, rtol=1e-6, atol=1e-3)
    g_fast = torch.autograd.grad(fast.sum(), [em, crf.transitions], retain_graph=True)
    g_exact = torch.autograd.grad(exact.sum(), [em, crf.transitions])
    for g, w in zip(g_fast, g_exact, strict=True):  # sums of ~300 fp32 probabilities
        torch.testing.assert_close(g, w, rtol=1e-4, atol=2e-4)
    # The NLL's gold side: a sum for full rows, the exact recursion for partial ones.
    nll = crf.nll(em, gold, mask, **kw)
    other = torch.arange(K) != gold.clamp(min=0)[..., None]
    only = em.masked_fill(((gold != -100) & mask)[..., None] & other, -1e4)
    want = exact - crf.log_partition(only, mask, **kw, exact=True)
    torch.testing.assert_close(nll, want, rtol=1e-6, atol=1e-3)
    assert nll[4] == 0 and bool((nll[mask.any(1)] > 0).all())
    # marginals (forward-backward) are the gradient of log Z by the emissions, here in fp64
    trans, start, end = (x.double() for x in crf.merged())
    em64 = em.detach().double().requires_grad_()
    log_z = []
    for b, L in enumerate(lengths):
        alpha = start + em64[b, 0]
        for t in range(1, L):
            alpha = torch.logsumexp(alpha[:, None] + trans, 0) + em64[b, t]
        log_z.append(torch.logsumexp(alpha + end, 0) if L else em64.new_zeros(()))
    (want,) = torch.autograd.grad(torch.stack(log_z).sum(), [em64])
    marg = crf.marginals(em.detach(), mask).exp().masked_fill(~mask[..., None], 0.0)
    # fp32 alpha + beta - log Z, each in the hundreds here: ~1e-4 of rounding
    torch.testing.assert_close(marg.double(), want, rtol=0, atol=1e-3)
