"""A character n-gram language model: interpolated modified Kneser–Ney (Chen & Goodman 1998,
https://dash.harvard.edu/handle/1/25104739, section 3), as KenLM estimates it.

Each sentence is read as ``<s> c1 … cn </s>``. With order N, the probability of a token w after
the context h (its N-1 previous tokens, cut at ``<s>``) is, from the lowest order up,

    P_0(w)   = 1 / (V - 1)                    uniform over every token but <s>, <unk> included
    P_k(w|h) = (a_k(hw) - D_k(a_k(hw))) / a_k(h·)  +  gamma_k(h) P_{k-1}(w|h')

where h' drops the oldest token of h, a_k is the raw count at the highest order and for n-grams
that start with ``<s>`` (nothing can precede them) and the number of distinct tokens seen just
before the n-gram otherwise (the continuation count), D_k(c) is one of three discounts per order
(c = 1, 2, ≥3) estimated from that order's count-of-counts, and gamma_k(h) hands the discounted
mass down: (D1 N1(h·) + D2 N2(h·) + D3 N3+(h·)) / a_k(h·); a context never seen hands all of it
(gamma = 1). A character unseen in training is ``<unk>``: it gets only the uniform floor of the
lowest order, so P(<unk>) is the probability of *any* unseen character, and the distribution sums
to one over the vocabulary, ``</s>`` and ``<unk>``.

Storage is a trie of reversed n-grams in sorted numpy arrays: the node of (w, c1, …, c_{k-1})
(w and the k-1 tokens before it, newest first) at depth k has the key ``parent * V + c_{k-1}``,
its parent being (w, c1, …, c_{k-2}) at depth k-1, and the depth-1 nodes are the token ids. So one
walk down the trie finds hw at every order, another finds h, each step one ``searchsorted`` over a
whole batch of queries. On the 8.9 M characters of the zh corpus (order 4: 4.0 M n-grams; one
AMD EPYC core) training takes about 3 s with ``np.unique`` and peaks at 0.5 GB, where counting
the raw n-grams alone in ``Counter``s of strings took 13 s at about the same memory; scoring
runs at ~150 k characters/s, and a candidate costs N windows, not a whole sentence. A one-
character substitution costs less still (:meth:`CharNgramLM.substitution_logprobs_many`): the
text's own nodes are found once, and only the nodes that hold the new character are looked up,
9 per candidate at order 4 where walking its 4 windows afresh took 19. The numbers are the
same to the last bit; a confusion-set spelling search over 50-character sentences (one
thread) went from 2.6 to 1.4 ms a sentence.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm import tqdm

from llmos.errors import CheckpointError
from llmos.files import atomic_write

UNK, BOS, EOS_ID = 0, 1, 2  # token ids; the vocabulary's characters follow from 3
FORMAT = "llmos-char-ngram"
# KenLM's --discount_fallback values, used when a count-of-counts is zero or the estimate is out
# of range (tiny corpora): https://kheafield.com/code/kenlm/estimation/
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
# What a damaged or foreign file raises while it is read and checked (gzip, JSON, the tables).
LOAD_ERRORS = (OSError, EOFError, zlib.error, ValueError, LookupError, TypeError, ArithmeticError)
OPTION_CACHE = 65536  # lists of options whose token ids are kept (per model)


def kn_discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the count-of-counts n1..n4 of ``counts`` (one order):
    Y = n1 / (n1 + 2 n2), D_c = c - (c + 1) Y n_{c+1} / n_c. Falls back to
    :data:`FALLBACK_DISCOUNTS` when some n_c is zero or a D_c is outside (0, c)."""
    n = [int(np.count_nonzero(counts == c)) for c in (1, 2, 3, 4)]
    if min(n) == 0:
        return FALLBACK_DISCOUNTS
    y = n[0] / (n[0] + 2 * n[1])
    d = tuple(c - (c + 1) * y * n[c] / n[c - 1] for c in (1, 2, 3))
    return d if all(0 < dc < c for c, dc in enumerate(d, 1)) else FALLBACK_DISCOUNTS


class CharNgramLM:
    """An interpolated modified Kneser–Ney character n-gram model (see the module docstring).

    Build one with :meth:`train` or :meth:`load`; the constructor takes the raw tables.

    Args:
        order: N, the longest n-gram.
        vocab: the characters, in id order (id ``i + 3``).
        counts: raw counts per depth 1..N: depth 1 dense over the V token ids, then one per
            entry of ``keys``.
        keys: the sorted trie keys of depths 2..N (``parent * V + token``).
    """

    EOS = "</s>"

    def __init__(
        self, order: int, vocab: Sequence[str], counts: list[np.ndarray], keys: list[np.ndarray]
    ) -> None:
        self.order, self.vocab = order, list(vocab)
        self._index = {ch: i + 3 for i, ch in enumerate(self.vocab)}
        self._ids_cache: dict[str, np.ndarray] = {}
        V = self.V = len(self.vocab) + 3
        if len(self._index) != len(self.vocab) or any(len(ch) != 1 for ch in self.vocab):
            raise ValueError("vocab must hold distinct single characters")
        if order < 1 or len(counts) != order or len(keys) != order - 1 or len(counts[0]) != V:
            raise ValueError(f"order {order} needs {order} count tables (the first of {V} ids)")
        self._keys = [np.zeros(0, np.int64), np.arange(V), *(np.asarray(k, np.int64) for k in keys)]
        self._counts = [np.zeros(0, np.int64), *(np.asarray(c, np.int64) for c in counts)]
        for d in range(2, order + 1):
            k, c = self._keys[d], self._counts[d]
            if len(k) != len(c) or np.any(np.diff(k) <= 0) or np.any(k < 0) or np.any(c <= 0):
                raise ValueError(f"depth {d}: keys must increase strictly, with a positive count")
            if len(k) and k[-1] // V >= len(self._keys[d - 1]):
                raise ValueError(f"depth {d}: a key's parent is not a depth-{d - 1} node")
        if np.any(self._counts[1] < 0) or self._counts[1].sum() == 0:
            raise ValueError("the unigram counts must be non-negative, some positive")
        self._total_chars = max(1, int(self._counts[1][3:].sum()))  # read per candidate
        self._estimate()

    def _child(self, d: int, parent: np.ndarray, tok: np.ndarray) -> np.ndarray:
        """Depth-``d`` node ids of (``parent`` at depth d-1) + ``tok``; -1 where absent."""
        keys = self._keys[d]
        if len(keys) == 0:
            return np.full(parent.shape, -1, np.int64)
        want = parent * self.V + tok
        i = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        return np.where((parent >= 0) & (tok >= 0) & (keys[i] == want), i, -1)

    def _estimate(self) -> None:
        """Adjusted counts, discounts, each n-gram's discounted term (alpha) and each context's
        gamma; depth d's gamma belongs to the nodes of depth d-1, as contexts."""
        N, V = self.order, self.V
        self.discounts: list[tuple[float, float, float]] = []  # D1, D2, D3+ of orders 1..N
        self._alpha, self._gamma = [np.zeros(0)], [np.zeros(0)]
        ctx = np.zeros(V, np.int64)  # the unigrams' context: the empty one
        for d in range(1, N + 1):
            keys, adj = self._keys[d], self._counts[d].copy()
            if d < N:  # continuation counts: distinct tokens before; raw after <s> (none can be)
                cont = np.bincount(self._keys[d + 1] // V, minlength=len(keys))
                adj = np.where((keys % V == BOS) & (d > 1), adj, cont)
            if d > 1:  # (w, c1..c_{d-1})'s context (c1..c_{d-1}): its parent's context + c_{d-1}
                ctx = self._child(d - 1, ctx[keys // V], keys % V) if d > 2 else keys % V
                if np.any(ctx < 0) or np.any(adj <= 0):
                    raise ValueError(f"depth {d}: the tables are inconsistent")
            if d == 1:
                adj[BOS] = 0  # <s> is never predicted
            D = kn_discounts(adj[adj > 0])
            self.discounts.append(D)
            disc = np.array([0.0, *D])[np.minimum(adj, 3)]
            total = np.bincount(ctx, weights=adj, minlength=len(self._keys[d - 1]) or 1)
            mass = np.bincount(ctx, weights=disc, minlength=len(total))
            self._alpha.append((adj - disc) / np.maximum(total, 1)[ctx])
            gamma = np.where(total > 0, mass / np.maximum(total, 1), 1.0)  # unseen: all mass
            self._gamma.append(gamma)
        self._gamma0 = float(self._gamma[1][0])  # the unigrams' gamma, towards the uniform

    def _probs(self, seq: np.ndarray) -> np.ndarray:
        """(Q, N) token ids, oldest first, the predicted token last, -1 before the sentence
        start -> (Q,) probabilities."""
        N = self.order
        q = seq[:, -1]
        p = self._alpha[1][q] + self._gamma0 / (self.V - 1)
        h = seq[:, -2] if N > 1 else q
        for d in range(2, N + 1):
            q = self._child(d, q, seq[:, N - d])  # (w, c1..c_{d-1})
            g = np.where(h >= 0, self._gamma[d][np.maximum(h, 0)], 1.0)  # gamma_d(c1..c_{d-1})
            p = np.where(q >= 0, self._alpha[d][np.maximum(q, 0)], 0.0) + g * p
            if d < N:
                h = self._child(d, h, seq[:, N - d - 1])
        return p

    def char_count(self, ch: str) -> int:
        """How often ``ch`` occurred in the training text (0 if never)."""
        i = self._index.get(ch)
        return 0 if i is None else int(self._counts[1][i])

    @property
    def total_chars(self) -> int:
        """The characters of the training text (sentence ends excluded), at least 1."""
        return self._total_chars

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``'s characters (``<unk>`` = 0 for unseen ones)."""
        return [self._index.get(ch, UNK) for ch in text]

    def _padded(self, text: str) -> np.ndarray:
        """-1 * (N-1), <s>, the characters, </s>: row t of its length-N windows predicts token t."""
        return np.array([-1] * (self.order - 1) + [BOS, *self.encode(text), EOS_ID], np.int64)

    def logprob(self, context: str, ch: str, bos: bool = True) -> float:
        """Natural log P(``ch`` | the last N-1 characters of ``context``).

        Args:
            context: the text before ``ch`` in its sentence (longer is fine: only its tail counts).
            ch: one character, or :attr:`EOS` for the end of the sentence.
            bos: ``context`` starts the sentence (``<s>`` comes before it); False for a fragment.
        """
        if ch != self.EOS and len(ch) != 1:
            raise ValueError(f"ch must be one character or {self.EOS!r}, got {ch!r}")
        last = EOS_ID if ch == self.EOS else self.encode(ch)[0]
        row = ([-1] * self.order + [BOS] * bos + self.encode(context) + [last])[-self.order :]
        return float(np.log(self._probs(np.array([row], np.int64))[0]))

    def char_logprobs(self, text: str) -> list[float]:
        """Log-probability of each character of the sentence ``text``, then of ``</s>``."""
        windows = sliding_window_view(self._padded(text), self.order)[1:]
        return np.log(self._probs(windows)).tolist()

    def sentence_logprob(self, text: str) -> float:
        """Natural log P(``text`` as a whole sentence, ``</s>`` included)."""
        return float(sum(self.char_logprobs(text)))

    def _window_rows(
        self, text: str, starts: np.ndarray, reps: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row r: ``text`` with (R, m) ``reps[r]`` at ``starts[r]``, the N-1 tokens before and
        after it; and (R, m+N-1) which of its n-grams end inside the sentence (``</s>``
        included)."""
        N, m = self.order, reps.shape[1]
        padded = np.concatenate([self._padded(text), np.full(N + m, EOS_ID)])  # beyond: masked
        k = np.arange(m + 2 * N - 2)
        rows = padded[starts[:, None] + 1 + k]  # (R, N-1 before + m + N-1 after)
        rows[:, N - 1 : N - 1 + m] = reps
        return rows, starts[:, None] + k[: m + N - 1] <= len(text)

    def _sums(self, rows: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """Summed log-probabilities of each row's n-grams that end inside the sentence."""
        N = self.order
        windows = sliding_window_view(rows, N, axis=1)  # (R, m+N-1, N)
        logp = np.log(self._probs(windows.reshape(-1, N))).reshape(len(rows), -1)
        return np.where(inside, logp, 0.0).sum(axis=1)

    def _window_sums(self, text: str, starts: np.ndarray, reps: np.ndarray) -> np.ndarray:
        """Row r: ``text`` with (R, m) ``reps[r]`` at ``starts[r]``; summed log-probabilities of
        the tokens at text positions start .. start+m+N-2, ``</s>`` included, none past it."""
        return self._sums(*self._window_rows(text, starts, reps))

    def window_logprobs(
        self, text: str, start: int, end: int, replacements: Sequence[str]
    ) -> np.ndarray:
        """For each replacement r of ``text[start:end]`` (same length), the summed log-probability
        of the tokens whose n-gram touches positions start..end-1 of the new sentence: those at
        start .. end+N-2 (``</s>`` included when in reach). Differences between replacements
        equal differences of :meth:`sentence_logprob`, at the cost of a few tokens each.

        Returns:
            (R,) float64 array, one sum per replacement.
        """
        if not 0 <= start < end <= len(text) or any(len(r) != end - start for r in replacements):
            raise ValueError(f"bad window {start}:{end} of a {len(text)}-char text or replacement")
        if not replacements:
            return np.zeros(0)
        reps = np.array([self.encode(r) for r in replacements], np.int64)
        return self._window_sums(text, np.full(len(reps), start), reps.reshape(len(reps), -1))

    def substitution_logprobs(
        self, text: str, options: Sequence[tuple[int, Sequence[str]]]
    ) -> list[np.ndarray]:
        """:meth:`window_logprobs` of many one-character substitutions in one batch: for each
        (position, characters), the window sum with each character at that position."""
        return self.substitution_logprobs_many([text], [options])[0]

    def substitution_logprobs_many(
        self, texts: Sequence[str], options: Sequence[Sequence[tuple[int, Sequence[str]]]]
    ) -> list[list[np.ndarray]]:
        """:meth:`substitution_logprobs` of many texts (``options[t]`` for ``texts[t]``) in one
        batch of table lookups: the same numbers, less per-call overhead.

        The texts' own trie nodes are found once (:meth:`_nodes`); a substitution then walks
        only the nodes of the n-grams that hold the new character (N(N+1)/2 - 1 lookups: 9 at
        order 4, where its N windows walked afresh took 5N - 1 = 19, their contexts included),
        and the n-gram before it takes its context from the text's.
        """
        N = self.order
        padded, starts, tokens, room, sizes = [], [], [], [], []
        at = 0
        for text, opts in zip(texts, options, strict=True):
            if any(not 0 <= i < len(text) for i, _ in opts):
                raise ValueError(f"options must be (position < {len(text)}, single characters)")
            sizes.append([len(o) for _, o in opts])
            if sum(sizes[-1]):
                ids = [self._option_ids(o) for _, o in opts]
                where = np.array([i for i, _ in opts], np.int64)
                pad = self._padded(text)
                starts.append(np.repeat(at + N + where, sizes[-1]))
                room.append(np.repeat(len(text) - where, sizes[-1]))
                tokens.append(np.concatenate(ids))
                padded.append(pad)
                at += len(pad)
        if not padded:
            return [[np.zeros(n) for n in sz] for sz in sizes]
        padded.append(np.full(N, EOS_ID, np.int64))  # read past the last text's end: masked
        sums = self._substitution_sums(
            np.concatenate(padded),
            np.concatenate(starts),
            np.concatenate(tokens),
            np.concatenate(room),
        )
        out, at = [], 0
        for sz in sizes:
            total = sum(sz)
            out.append(np.split(sums[at : at + total], np.cumsum(sz)[:-1]) if sz else [])
            at += total
        return out

    def _option_ids(self, chars: Sequence[str]) -> np.ndarray:
        """The token ids of a list of single characters (cached per list: a confusion set's
        characters are scored again and again)."""
        key = chars if isinstance(chars, str) else "".join(chars)
        ids = self._ids_cache.get(key)
        if ids is None:
            if len(key) != len(chars):
                raise ValueError("options must be (position, single characters)")
            if len(self._ids_cache) >= OPTION_CACHE:
                self._ids_cache.clear()
            ids = self._ids_cache[key] = np.array(self.encode(key), np.int64)
        return ids

    def _nodes(self, padded: np.ndarray) -> np.ndarray:
        """(N+1, L) trie nodes of the token ids ``padded`` (-1 for before a sentence): row d,
        column k, the depth-d node of (padded[k], padded[k-1], ..., padded[k-d+1]); -1 where
        there is none (row 0 unused)."""
        N, L = self.order, len(padded)
        nodes = np.full((N + 1, L), -1, np.int64)
        nodes[1] = padded
        for d in range(2, N + 1):
            nodes[d, d - 1 :] = self._child(d, nodes[d - 1, d - 1 :], padded[: L - d + 1])
        return nodes

    def _substitution_sums(
        self, padded: np.ndarray, starts: np.ndarray, tokens: np.ndarray, room: np.ndarray
    ) -> np.ndarray:
        """Row r: ``tokens[r]`` in place of ``padded[starts[r]]``; the summed log-probabilities
        of the tokens at starts[r] .. starts[r]+N-1 that are at most ``room[r]`` after it (the
        rest is past its sentence's ``</s>``). The same arithmetic as :meth:`_probs`."""
        N = self.order
        old = self._nodes(padded)
        # new[j][d]: the depth-d node ending j tokens after the substitution, d > j (it holds
        # the new token); the others are the text's own.
        new: list[dict[int, np.ndarray]] = []
        for j in range(N):
            k = starts + j
            row: dict[int, np.ndarray] = {}
            if j == 0:
                row[1] = tokens
            else:
                row[j + 1] = self._child(j + 1, old[j, k], tokens)
            for d in range(j + 2, N + 1):
                row[d] = self._child(d, row[d - 1], padded[k - d + 1])
            new.append(row)
        logp = np.zeros((len(starts), N))
        for j in range(N):
            k = starts + j
            q = new[j].get(1, old[1, k])
            p = self._alpha[1][q] + self._gamma0 / (self.V - 1)
            for d in range(2, N + 1):
                q = new[j][d] if d > j else old[d, k]
                h = new[j - 1][d - 1] if j >= 1 and d - 1 > j - 1 else old[d - 1, k - 1]
                g = np.where(h >= 0, self._gamma[d][np.maximum(h, 0)], 1.0)
                p = np.where(q >= 0, self._alpha[d][np.maximum(q, 0)], 0.0) + g * p
            logp[:, j] = np.log(p)
        return np.where(np.arange(N) <= room[:, None], logp, 0.0).sum(axis=1)

    def window_logprob(self, text: str, start: int, end: int) -> float:
        """:meth:`window_logprobs` of ``text`` as it is."""
        return float(self.window_logprobs(text, start, end, [text[start:end]])[0])

    @classmethod
    def train(cls, sentences: Iterable[str], order: int = 4, progress: bool = True) -> CharNgramLM:
        """Count the n-grams of ``sentences`` (a trailing newline is dropped, empty ones skipped:
        pass a file's lines as they are) and estimate the model."""
        parts = []
        for s in tqdm(sentences, desc="n-gram counts", unit=" sentences", disable=not progress):
            s = s.rstrip("\r\n")
            if s:
                parts.append(np.frombuffer(s.encode("utf-32-le"), np.uint32))
        if not parts:
            raise ValueError("no sentences to train the n-gram model on")
        codes, ids = np.unique(np.concatenate(parts), return_inverse=True)
        V, lengths = len(codes) + 3, np.array([len(p) for p in parts])
        first = np.cumsum(lengths + 2) - (lengths + 2)  # the index of each sentence's <s>
        toks = np.full(int(first[-1] + lengths[-1] + 2), EOS_ID, np.int64)
        toks[first] = BOS
        inner = np.ones(len(toks), bool)
        inner[first], inner[first + lengths + 1] = False, False
        toks[inner] = ids + 3
        sentence_start = np.repeat(first, lengths + 2)
        pos = np.arange(len(toks))
        node, counts, keys = toks, [np.bincount(toks, minlength=V)], []
        for d in range(2, order + 1):
            at = np.nonzero(pos - (d - 1) >= sentence_start)[0]  # n-grams ending at `at`
            key, inv, cnt = np.unique(
                node[at] * V + toks[at - d + 1], return_inverse=True, return_counts=True
            )
            node = np.full(len(toks), -1, np.int64)
            node[at] = inv
            keys.append(key)
            counts.append(cnt)
        return cls(order, [chr(c) for c in codes], counts, keys)

    def save(self, path: str | Path) -> Path:
        """Write the raw tables as gzipped JSON (keys delta-encoded), atomically; the model is
        re-estimated from them on load."""
        doc = {
            "format": FORMAT,
            "version": 1,
            "order": self.order,
            "vocab": "".join(self.vocab),
            "counts": [c.tolist() for c in self._counts[1:]],
            "key_deltas": [np.diff(k, prepend=0).tolist() for k in self._keys[2:]],
        }
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return atomic_write(path, gzip.compress(data, compresslevel=6, mtime=0))

    @classmethod
    def load(cls, path: str | Path) -> CharNgramLM:
        """Read a model written by :meth:`save`; :class:`CheckpointError` if it is missing or
        not one."""
        try:
            doc = json.loads(gzip.decompress(Path(path).read_bytes()))
            head = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else doc
            if head != (FORMAT, 1):
                raise ValueError(f"{str(head)[:40]} is not {FORMAT} v1")
            keys = [np.cumsum(np.asarray(k, np.int64)) for k in doc["key_deltas"]]
            counts = [np.asarray(c, np.int64) for c in doc["counts"]]
            return cls(int(doc["order"]), list(doc["vocab"]), counts, keys)
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: no such n-gram model file; train one first") from e
        except LOAD_ERRORS as e:
            raise CheckpointError(f"{path}: not a readable llmos n-gram model ({e})") from e
