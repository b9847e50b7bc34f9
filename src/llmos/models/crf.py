"""A linear-chain conditional random field over per-token emission scores.

A path ``y_0 .. y_{L-1}`` through a sequence of L tokens scores

    start[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{L-1}]

and has probability ``exp(score - log Z)``, Z summing over every path (Lafferty et al., 2001).
``transitions``, ``start`` and ``end`` are learned; a tagging scheme's hard constraints (BIO's
``O -> I-X``, BMES's ``B -> B``, ...) are boolean masks merged on top: a disallowed entry is
replaced by :data:`NEG` (by ``-inf`` for decoding), so it never contributes and its parameter
never receives a gradient. The masks are buffers rebuilt from the labels and the scheme, not
weights: a checkpoint stores ``crf.transitions``, ``crf.start`` and ``crf.end`` only.

Every operation is batched over rows (a loop over time only). Sequences are left-aligned: a
row's ``mask`` is a prefix of True, its length L >= 0.

Two kinds of partial knowledge, both used by fine-tuning on windows of long texts:

- ``labels`` of -100 inside a sequence (a label the model lacks) are *marginalized*: the
  negative log-likelihood sums over every tag at those positions (a "partial" CRF, Tsuboi et
  al., 2008), so the loss neither forces nor forbids anything there.
- ``open_start`` / ``open_end`` mark a row whose first / last token is not the text's (a window
  cut out of a longer text). The tag before the cut is unknown, so that edge gets neither the
  learned ``start`` / ``end`` scores nor the scheme's start / end constraints: a window may open
  inside a span (on ``I-X``) and close inside one.

Vocabulary of shape comments: B batch, T sequence length, K labels.
"""

from __future__ import annotations

import torch
from torch import nn

# What a disallowed transition scores in the likelihood: finite, so that a row whose gold path
# crosses one still has a finite (huge) loss instead of NaN gradients; exp(NEG) is 0 in fp32.
NEG = -1e4
IGNORE = -100
# The floor of a sum of probabilities in the forward recursion (:meth:`CRF._alphas`).
TINY = 1e-30


class CRF(nn.Module):
    """Learned transition, start and end scores over K labels, under optional hard constraints.

    Args:
        num_labels: K.
        allowed: (K, K) bool, ``allowed[i, j]`` = label j may follow label i; None allows all.
        start_allowed: (K,) bool, labels a sequence may start with; None allows all.
        end_allowed: (K,) bool, labels a sequence may end with; None allows all.
    """

    def __init__(
        self,
        num_labels: int,
        allowed: torch.Tensor | None = None,
        start_allowed: torch.Tensor | None = None,
        end_allowed: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        K = num_labels
        # Zero scores: at initialisation the CRF decodes exactly as constrained Viterbi over
        # the emissions does (a per-token softmax only shifts each position by a constant).
        self.transitions = nn.Parameter(torch.zeros(K, K))
        self.start = nn.Parameter(torch.zeros(K))
        self.end = nn.Parameter(torch.zeros(K))

        def mask(m: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
            m = torch.ones(shape, dtype=torch.bool) if m is None else torch.as_tensor(m).bool()
            assert m.shape == shape, f"constraint mask of shape {tuple(m.shape)}, want {shape}"
            return m

        # Not persistent: the constraints follow from task.json (labels, scheme).
        self.register_buffer("allowed", mask(allowed, (K, K)), persistent=False)
        self.register_buffer("start_allowed", mask(start_allowed, (K,)), persistent=False)
        self.register_buffer("end_allowed", mask(end_allowed, (K,)), persistent=False)

    @property
    def num_labels(self) -> int:
        return self.transitions.shape[0]

    def merged(self, fill: float = NEG) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(K, K) transitions, (K,) start and (K,) end scores in fp32, disallowed ones ``fill``."""
        return (
            self.transitions.float().masked_fill(~self.allowed, fill),
            self.start.float().masked_fill(~self.start_allowed, fill),
            self.end.float().masked_fill(~self.end_allowed, fill),
        )

    def _edges(
        self,
        start: torch.Tensor,
        end: torch.Tensor,
        B: int,
        open_start: torch.Tensor | None,
        open_end: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row (B, K) start and end scores: zeros on an open edge."""
        s, e = start.expand(B, -1), end.expand(B, -1)  # (B, K)
        if open_start is not None:
            s = torch.where(open_start.bool()[:, None], 0.0, s)
        if open_end is not None:
            e = torch.where(open_end.bool()[:, None], 0.0, e)
        return s, e

    def _alphas(
        self,
        em: torch.Tensor,
        mask: torch.Tensor,
        trans: torch.Tensor,
        start: torch.Tensor,
        exact: bool = False,
    ) -> list[torch.Tensor]:
        """Forward variables: ``alpha[t][b, k]`` = log-sum of the scores of every prefix that
        ends on label k at position t (past a row's end, its last value carried on).

        Each step is a (B, K) @ (K, K) product in exp space, shifted by the row's maximum and by
        the transitions' maximum so that nothing overflows: the log-sum-exp over a (B, K, K)
        broadcast, at a fraction of its cost (for K = 176, joint segmentation + POS, the CRF's
        loss and gradient on 16 windows of 185 tokens took 2.1 s that way and 0.07 s this
        way; docs/BENCHMARKS.md, "A cheaper CRF"). The one difference: a label whose prefixes
        all score more than ~69 nats below the row's best scores ``log(TINY)`` below it, not
        less. Its probability is 0 either way, and the floor keeps the gradient finite.
        ``exact`` runs the log-sum-exp form, where every score counts however low: the gold
        pass of a partly labelled row, whose gold path may cross a disallowed move and must
        then cost :data:`NEG`, not the floor.
        """
        if exact:

            def advance(alpha: torch.Tensor) -> torch.Tensor:
                return torch.logsumexp(alpha[:, :, None] + trans, dim=1)

        else:
            step = _exp_step(trans)

            def advance(alpha: torch.Tensor) -> torch.Tensor:
                return _log_matmul_exp(alpha, *step)

        alpha = start + em[:, 0]  # (B, K)
        alphas = [alpha]
        for t in range(1, em.shape[1]):
            alpha = torch.where(mask[:, t, None], advance(alpha) + em[:, t], alpha)
            alphas.append(alpha)
        return alphas

    def log_partition(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        open_start: torch.Tensor | None = None,
        open_end: torch.Tensor | None = None,
        exact: bool = False,
    ) -> torch.Tensor:
        """log Z of each row (the forward algorithm).

        Args:
            emissions: (B, T, K) scores (a tagger's logits).
            mask: (B, T) bool, a prefix of True per row (its tokens).
            open_start, open_end: (B,) bool, rows cut out of a longer text (module docstring).
            exact: the log-sum-exp recursion (:meth:`_alphas`).

        Returns:
            (B,) fp32; 0 for an empty row.
        """
        em, mask = emissions.float(), _check_mask(mask, emissions)
        B, T, _ = em.shape
        if T == 0:
            return em.new_zeros(B)
        trans, start, end = self.merged()
        start, end = self._edges(start, end, B, open_start, open_end)
        alpha = self._alphas(em, mask, trans, start, exact)[-1]
        return torch.where(mask[:, 0], torch.logsumexp(alpha + end, dim=1), 0.0)

    def nll(
        self,
        emissions: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor,
        open_start: torch.Tensor | None = None,
        open_end: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Negative log-likelihood of each row's labels, ``log Z - log Z(paths through them)``.

        Args:
            emissions: (B, T, K).
            labels: (B, T) int64 gold label per token; -100 inside ``mask`` marginalizes that
                position (any label), outside it is ignored.
            mask, open_start, open_end: as in :meth:`log_partition`.

        Returns:
            (B,) fp32, >= 0 up to rounding; 0 for an empty row.
        """
        em = emissions.float()
        mask = _check_mask(mask, em)
        known = (labels != IGNORE) & mask  # (B, T)
        y = labels.clamp(min=0)
        log_z = self.log_partition(em, mask, open_start, open_end)
        # A fully labelled row has one gold path: its score is a sum, no recursion needed.
        gold = self._path_score(em, y, mask, open_start, open_end)
        partial = (mask & ~known).any(1)  # rows with a marginalized position
        if bool(partial.any()):
            rows = partial.nonzero().squeeze(1)
            other = torch.arange(em.shape[-1], device=em.device) != y[rows, :, None]
            only = em[rows].masked_fill(known[rows, :, None] & other, NEG)  # gold labels left
            edges = [None if x is None else x[rows] for x in (open_start, open_end)]
            gold = gold.index_put((rows,), self.log_partition(only, mask[rows], *edges, True))
        return log_z - gold

    def _path_score(
        self,
        em: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
        open_start: torch.Tensor | None,
        open_end: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B,) score of each row's label path ``y`` (module docstring), disallowed moves at
        :data:`NEG`; 0 for an empty row."""
        B, T, _ = em.shape
        if T == 0:
            return em.new_zeros(B)
        trans, start, end = self.merged()
        start, end = self._edges(start, end, B, open_start, open_end)
        maskf = mask.float()
        score = (em.gather(2, y[..., None]).squeeze(2) * maskf).sum(1)
        score = score + (trans[y[:, :-1], y[:, 1:]] * maskf[:, 1:]).sum(1)
        last = (mask.sum(1) - 1).clamp(min=0)
        edges = start.gather(1, y[:, :1]).squeeze(1) + end.gather(
            1, y.gather(1, last[:, None])
        ).squeeze(1)
        return score + edges * maskf[:, 0]

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log P(y_t = k) for every token (forward-backward).

        Args:
            emissions: (B, T, K).
            mask: (B, T) bool prefix mask.

        Returns:
            (B, T, K) fp32 log-marginals; 0 past a row's end.
        """
        em, mask = emissions.float(), _check_mask(mask, emissions)
        B, T, K = em.shape
        if T == 0:
            return em.new_zeros(B, T, K)
        trans, start, end = self.merged()
        start, end = self._edges(start, end, B, None, None)
        alphas = self._alphas(em, mask, trans, start)
        log_z = torch.logsumexp(alphas[-1] + end, dim=1)  # (B,)
        beta = end  # (B, K): at a row's last token, the end score
        back, top = _exp_step(trans.T)  # the transitions read backwards, as in _alphas
        betas = [beta]
        for t in range(T - 2, -1, -1):
            # beta[b, i] = logsumexp_j trans[i, j] + em[b, t+1, j] + beta_{t+1}[b, j]
            nxt = _log_matmul_exp(em[:, t + 1] + beta, back, top)  # (B, K)
            beta = torch.where(mask[:, t + 1, None], nxt, end)
            betas.append(beta)
        out = torch.stack(alphas, 1) + torch.stack(betas[::-1], 1) - log_z[:, None, None]
        return out.masked_fill(~mask[..., None], 0.0)  # (B, T, K)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The highest-scoring allowed path of each row (Viterbi).

        Args:
            emissions: (B, T, K).
            mask: (B, T) bool prefix mask.

        Returns:
            (B, T) int64 label indices, -1 past a row's end.

        Raises:
            ValueError: if a row has no path the constraints allow.
        """
        em, mask = emissions.float(), _check_mask(mask, emissions)
        B, T, _ = em.shape
        out = torch.full((B, T), -1, dtype=torch.long, device=em.device)
        if T == 0:
            return out
        # -inf, not NEG: a disallowed transition can never win, whatever the emissions.
        trans, start, end = self.merged(float("-inf"))
        score = start + em[:, 0]  # (B, K)
        back = []  # back[t-1][b, j]: the best label at t-1 when token t has label j
        for t in range(1, T):
            best, idx = (score[:, :, None] + trans).max(dim=1)  # (B, K)
            back.append(idx)
            score = torch.where(mask[:, t, None], best + em[:, t], score)
        score = score + end
        top, last = score.max(dim=1)  # (B,)
        lengths = mask.sum(1)
        if bool(((lengths > 0) & torch.isinf(top)).any()):
            raise ValueError("no label sequence satisfies the transition constraints")
        cur = last
        for t in range(T - 1, -1, -1):
            cur = torch.where(lengths - 1 == t, last, cur)  # rows whose last token is t
            out[:, t] = torch.where(t < lengths, cur, -1)
            if t > 0:
                cur = back[t - 1].gather(1, cur[:, None]).squeeze(1)
        return out


def _exp_step(trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(trans - top)`` and ``top``, the transitions' maximum: disallowed entries exactly 0,
    nothing above 1."""
    top = trans.max()
    return (trans - top).exp(), top


def _log_matmul_exp(x: torch.Tensor, step: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``log(exp(x) @ exp(trans))`` for (B, K) ``x``, given :func:`_exp_step`'s ``step`` and
    ``top``: each row shifted by its maximum first, the sums floored at :data:`TINY`. In fp32
    even inside a bf16 autocast region (a training step's), which would round the product to
    bf16's 8 bits."""
    with torch.autocast(x.device.type, enabled=False):
        m = x.max(dim=1, keepdim=True).values  # (B, 1)
        return ((x - m).exp() @ step).clamp_min(TINY).log() + m + top


def _check_mask(mask: torch.Tensor, emissions: torch.Tensor) -> torch.Tensor:
    mask = mask.bool()
    assert mask.shape == emissions.shape[:2], f"mask {tuple(mask.shape)} vs emissions"
    # Left-aligned: no True after a False (the recursions carry a row's state past its end).
    assert not bool((mask[:, 1:] & ~mask[:, :-1]).any()), "the CRF mask must be a prefix per row"
    return mask
