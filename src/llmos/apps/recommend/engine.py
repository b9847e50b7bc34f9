"""The recommender a user talks to: a trained checkpoint plus the user's own events, no HTTP.

A user's events fold into a *taste* (:func:`~llmos.apps.recommend.events.fold`, which also
says what each kind of event weighs): what they liked, disliked, hid and saw.
The next recommendation is computed from it on every request, so an event changes the next
list at once, without retraining:

- **personal** (EASE, Steck 2019): the user's row of item weights times the item-item matrix.
  A user the model never saw is *folded in* this way exactly like a training user; a dislike
  enters the row with a negative weight, so items like it sink.
- **wish** (onboarding, or a request's free text, e.g. "想看轻松的喜剧"): the cosine between the
  wish's embedding (as an E5 query) and the items' text vectors (E5 passages). Beside a user's
  history it weighs :data:`WISH_WEIGHT_WITH_HISTORY`: it re-orders what they would like
  (measured on MovieLens: the films of the genre asked for that users went on to rate, recall
  0.289 -> 0.305 at 0.3; at the full weight 0.169, as films that only match the words crowd in).
- **sequence** (when the checkpoint has a SASRec, ``llmos recommend train --sasrec-steps``):
  the next-item scores of llmos's GPT over the user's latest positive items, oldest first, so
  the order of what they just did counts, not only the set.
- **tags**: the user's chosen interests raise the items that carry them.
- **popularity** (counts, time-decayed when the model was trained so): the floor for a user
  with nothing else, and a prior as strong as the wish beside it (measured: a weaker one
  ranks obscure films that match the words; ``bench/recommend_live.py``, "Onboarding").

The scored signals (personal, sequence, wish, popularity) are standardised over the catalog
(zero mean, unit variance) and scaled so that each one's best item scores 1, so they add on
one scale; an interest adds a fixed amount to each item that carries it. The weights
(:data:`WISH_WEIGHT` ...) are design choices: an interest ranks above any popularity for a
new user (:data:`TAG_WEIGHT`) and counts little once their events speak.

**Learned ranking** (when the checkpoint has a ranker, ``llmos recommend train --ranker``): for
a user with history, the best :data:`RANK_POOL` allowed items of that sum are the candidates
(with an MF model, ``--mf-steps``, also the best :data:`MF_POOL` others of the user's vector,
folded in from their events, from a FAISS index over the MF item vectors), and a
:class:`~llmos.models.ranker.Ranker` trained on held-out next items re-scores them from their
:data:`FEATURES` (:meth:`Recommender.features`); a wish's and the interests' signals are added
to its standardised score, and the items outside the pool follow, in the sum's order.

Filters run before the ranking: items already seen, hidden, disliked or excluded, and items
with a blocked tag, never come back; ``tags`` restricts the list to items with one of them.
``diversity`` re-ranks the candidates by maximal marginal relevance over the items' tags.
Every result says why it is there (``reason``), from the signal that gave it the most.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmos.apps.recommend.diversity import mmr
from llmos.apps.recommend.events import Taste
from llmos.checkpoint.io import load_state_dict_strict
from llmos.checkpoint.recommender import RANKER, SASREC, RecommenderCheckpoint
from llmos.data.interactions import Item
from llmos.errors import CheckpointError
from llmos.models.candidates import ItemIndex
from llmos.models.mf import fold_in
from llmos.models.ranker import Ranker, RankerConfig
from llmos.models.sasrec import SASRec, SASRecConfig

WISH_WEIGHT = 1.0  # the wish's standardised cosine, for a user without history
# The same once their events speak: a wish then re-orders what they would like. At 1 it drew
# films that only match the words (bench/recommend_live.py, "A wish beside a history").
WISH_WEIGHT_WITH_HISTORY = 0.3
SEQUENCE_WEIGHT = 1.0  # the sequential model's, next to the personal score's
TAG_WEIGHT = 2.0  # per chosen interest, for a user without history: above any popularity
TAG_WEIGHT_WITH_HISTORY = 0.2  # the same once their events speak for them
POP_PRIOR = 1.0  # popularity beside a wish or tags (no personal score): bench/recommend_live.py
MMR_POOL = 100  # candidates the diversity re-ranking chooses from
RANK_POOL = 200  # candidates the learned ranker re-scores, from the signals' sum
MF_POOL = 100  # more candidates from the MF model's FAISS index, when it has one
MF_REG = 30.0  # MF fold-in's L2 weight when the checkpoint names none (llmos.models.mf.fold_in)
# What the learned ranker reads of each candidate (Recommender.features): the personal and
# sequential scores, popularity, the text's cosine to the user's liked items, the user's
# affinity to its tags (standardised like the signals), log(1 + the user's positives), and the
# MF model's score of the user's folded-in vector (standardised over the candidates).
FEATURES = ("personal", "sequence", "popular", "content", "genre", "history", "mf")


@dataclass(frozen=True)
class Recommendation:
    item: Item
    score: float
    reason: str
    source: str  # personal | sequence | wish | tags | popular; similar items: content too


def _standard(x: torch.Tensor) -> torch.Tensor:
    """``x`` standardised, then divided by its largest value: every signal's best item scores
    1, so a heavy-tailed signal (EASE's) does not drown the others."""
    std = x.std()
    if not float(std) > 0:
        return torch.zeros_like(x)
    z = (x - x.mean()) / std
    return z / z.max()


class Recommender:
    """A recommender checkpoint, ready to answer (see the module docstring)."""

    def __init__(self, ckpt: RecommenderCheckpoint) -> None:
        self.catalog = ckpt.catalog
        self.meta = ckpt.meta
        self.items = ckpt.items
        self.index = {item.id: i for i, item in enumerate(self.items)}
        self.ease = ckpt.weights["ease.weight"].float()
        self._ease_np = self.ease.numpy()  # the same memory, for small gathers in numpy
        self.counts = ckpt.weights["popularity.counts"].float()
        content = ckpt.weights.get("content.vectors")
        self.content = (
            torch.nn.functional.normalize(content.float(), dim=-1) if content is not None else None
        )
        self.tags = [frozenset(item.tags) for item in self.items]
        # (items,) bool per tag: the filters and the interests are a few vector operations
        # per request, not a Python loop over the catalog.
        self.tag_mask: dict[str, torch.Tensor] = {}
        for i, item in enumerate(self.items):
            for t in item.tags:
                self.tag_mask.setdefault(t, torch.zeros(self.num_items, dtype=torch.bool))[i] = True
        counts = {t: int(mask.sum()) for t, mask in self.tag_mask.items()}
        # The catalog's tags with their item counts, the commonest first (onboarding).
        self.tag_counts = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.popular = _standard(torch.log1p(self.counts))
        self.sasrec: SASRec | None = None
        if ckpt.sasrec is not None:
            self.sasrec = SASRec(SASRecConfig(**ckpt.sasrec))
            prefix = len(SASREC)
            state = {k[prefix:]: v for k, v in ckpt.weights.items() if k.startswith(SASREC)}
            load_state_dict_strict(self.sasrec, state)
            self.sasrec.eval()
        # (items, tags) 0/1, sparse, and each item's tag count: the genre feature
        names = sorted(self.tag_mask)
        rows, cols = [], []
        for j, t in enumerate(names):
            idx = torch.nonzero(self.tag_mask[t]).squeeze(1)
            rows.append(idx)
            cols.append(torch.full_like(idx, j))
        at = torch.stack([torch.cat(rows), torch.cat(cols)]) if rows else torch.zeros(2, 0)
        self.tag_matrix = torch.sparse_coo_tensor(
            at.long(), torch.ones(at.shape[1]), (self.num_items, len(names)), check_invariants=True
        ).coalesce()
        self.item_of_tag = self.tag_matrix.t().coalesce()  # (tags, items)
        self.tag_count = torch.tensor([float(len(t)) for t in self.tags])
        self.mf = ckpt.weights.get("mf.items")
        self.mf_reg = float((ckpt.meta.get("mf") or {}).get("fold_in_reg", MF_REG))
        # FAISS over the MF item vectors (exact up to 100,000 items, IVF above): the MF
        # generator's own candidates
        self.mf_index = ItemIndex.build(self.mf.float().numpy()) if self.mf is not None else None
        self.ranker: Ranker | None = None
        if ckpt.ranker is not None:
            config = RankerConfig.from_dict(ckpt.ranker)
            if config.features != FEATURES:
                raise CheckpointError(
                    f"{ckpt.path}: the ranker reads features {list(config.features)}; this "
                    f"llmos computes {list(FEATURES)}: train it again (llmos recommend train "
                    "--ranker)"
                )
            self.ranker = Ranker(config)
            state = {k[len(RANKER) :]: v for k, v in ckpt.weights.items() if k.startswith(RANKER)}
            load_state_dict_strict(self.ranker, state)
            self.ranker.eval()

    @property
    def num_items(self) -> int:
        return len(self.items)

    def _any_tag(self, tags: Iterable[str]) -> torch.Tensor:
        """(items,) bool: the items with one of ``tags``."""
        out = torch.zeros(self.num_items, dtype=torch.bool)
        for t in set(tags):
            if t in self.tag_mask:
                out |= self.tag_mask[t]
        return out

    def row(self, taste: Taste) -> torch.Tensor:
        """The user's (items,) input row: each known item's weight."""
        x = torch.zeros(self.num_items)
        for item, w in taste.weights.items():
            i = self.index.get(item)
            if i is not None:
                x[i] = w
        return x

    def _history(self, taste: Taste, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The standardised (items,) scores of the user's history: ``personal`` (EASE over
        their row ``x``) and ``sequence`` (SASRec over their latest items), those they have."""
        out: dict[str, torch.Tensor] = {}
        if bool((x > 0).any()):
            rows = torch.nonzero(x).squeeze(1)  # the user's few items: rows of B, not all of it
            out["personal"] = _standard(x[rows] @ self.ease[rows])
        if self.sasrec is not None and any(x in self.index for x in taste.recent):
            out["sequence"] = _standard(self.next_items(taste))
        return out

    def _signals(
        self, taste: Taste, wish: torch.Tensor | None, interests: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Each signal's standardised (items,) scores, those the user has."""
        out = self._history(taste, self.row(taste))
        history = bool(out.keys() & {"personal", "sequence"})
        if "sequence" in out:
            out["sequence"] = SEQUENCE_WEIGHT * out["sequence"]
        if wish is not None and self.content is not None:
            w = WISH_WEIGHT_WITH_HISTORY if history else WISH_WEIGHT
            out["wish"] = w * _standard(self.content @ wish)
        if interests:
            chosen = set(interests)
            w = TAG_WEIGHT_WITH_HISTORY if history else TAG_WEIGHT
            counts = torch.zeros(self.num_items)
            for t in chosen:
                if t in self.tag_mask:
                    counts += self.tag_mask[t].float()
            out["tags"] = w * counts
        if not history:
            out["popular"] = (POP_PRIOR if out else 1.0) * self.popular
        return out

    def features(
        self,
        taste: Taste,
        pool: torch.Tensor,
        history: dict[str, torch.Tensor] | None = None,
        *,
        x: torch.Tensor | None = None,
        user: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(len(pool), len(FEATURES)) what the learned ranker reads of the items ``pool`` for
        this user (see :data:`FEATURES`; a feature the user or the model lacks is 0): the
        scores standardised over the catalog, ``mf``'s over the pool (its dot products are
        computed for the pool only). ``history`` (the user's :meth:`_history` scores), ``x``
        (their :meth:`row`) and ``user`` (their :meth:`user_vector`): when already computed."""
        x = self.row(taste) if x is None else x
        history = self._history(taste, x) if history is None else history
        user = self.user_vector(x) if user is None else user
        zeros = torch.zeros(self.num_items)
        positive = x.clamp(min=0)
        content = zeros
        if self.content is not None and bool((positive > 0).any()):
            rows = torch.nonzero(positive).squeeze(1)
            profile = torch.nn.functional.normalize(positive[rows] @ self.content[rows], dim=0)
            content = _standard(self.content @ profile)
        genre = zeros
        if self.tag_matrix.shape[1] and bool((positive > 0).any()):
            share = torch.sparse.mm(self.item_of_tag, positive[:, None]).squeeze(1)
            share = share / positive.sum()
            per_item = torch.sparse.mm(self.tag_matrix, share[:, None]).squeeze(1)
            genre = _standard(per_item / self.tag_count.clamp(min=1))
        count = torch.full((self.num_items,), float(torch.log1p((positive > 0).sum())))
        columns = {
            "personal": history.get("personal", zeros)[pool],
            "sequence": history.get("sequence", zeros)[pool],
            "popular": self.popular[pool],
            "content": content[pool],
            "genre": genre[pool],
            "history": count[pool],
            "mf": _standard(self.mf[pool] @ user) if user is not None else zeros[pool],
        }
        return torch.stack([columns[f] for f in FEATURES], dim=-1)

    def user_vector(self, x: torch.Tensor) -> torch.Tensor | None:
        """The user's MF vector, folded in from their row ``x`` (the items they acted on and
        their weights; :func:`~llmos.models.mf.fold_in`); None without an MF model or
        events."""
        if self.mf is None or not bool((x != 0).any()):
            return None
        rows = torch.nonzero(x).squeeze(1)
        return fold_in(self.mf[rows], x[rows], self.mf_reg)

    @torch.inference_mode()
    def candidates(
        self,
        taste: Taste,
        total: torch.Tensor | None = None,
        n: int = RANK_POOL,
        signals: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned ranker's candidates for a user and their (len(pool), F)
        :meth:`features`: the best ``n`` items of ``total`` (default: the signals' sum over
        the allowed items, history only) and, with an MF model, the best :data:`MF_POOL`
        other allowed items of the user's folded-in vector, from its FAISS index. What the
        ranker is trained on and what it re-scores. ``signals``: the user's, when already
        computed."""
        signals = self._signals(taste, None, ()) if signals is None else signals
        if total is None:
            total = torch.stack(list(signals.values())).sum(0)
            total = total.masked_fill(~self.allowed(taste), -torch.inf)
        allowed = int(torch.isfinite(total).sum())
        pool = torch.topk(total, min(allowed, n)).indices
        x = self.row(taste)
        user = self.user_vector(x)
        if user is not None and self.mf_index is not None and allowed > len(pool):
            taken = torch.zeros(self.num_items, dtype=torch.bool)
            taken[pool] = True
            # enough to find MF_POOL new ones past the pool and the user's seen items
            want = MF_POOL + len(pool) + len(taste.seen)
            _, found = self.mf_index.search(user.numpy()[None], want)
            ids = torch.from_numpy(found[0][found[0] >= 0].astype(np.int64))
            ids = ids[torch.isfinite(total[ids]) & ~taken[ids]][:MF_POOL]
            pool = torch.cat([pool, ids])
        history = {k: v / SEQUENCE_WEIGHT if k == "sequence" else v for k, v in signals.items()}
        return pool, self.features(taste, pool, history, x=x, user=user)

    @torch.inference_mode()
    def _rank(
        self, taste: Taste, signals: dict[str, torch.Tensor], total: torch.Tensor
    ) -> torch.Tensor:
        """``total`` (disallowed items at -inf) re-scored by the learned ranker: its best
        :data:`RANK_POOL` items by the ranker (plus the wish's and interests' signals), the
        rest after them in ``total``'s order."""
        assert self.ranker is not None
        pool, features = self.candidates(taste, total, signals=signals)
        score = _standard(self.ranker(features))
        for extra in ("wish", "tags"):
            if extra in signals:
                score = score + signals[extra][pool]
        out = total - (float(total[pool[0]]) - float(score.min()) + 1.0)  # the rest: below
        out[pool] = score
        return out

    @torch.inference_mode()
    def next_items(self, taste: Taste) -> torch.Tensor:
        """(items,) the sequential model's scores of the item after the user's latest positive
        items (``taste.recent``, oldest first, the last ``max_len`` of them; at least one of
        them in the catalog)."""
        assert self.sasrec is not None
        known = [self.index[x] for x in reversed(taste.recent) if x in self.index]
        known = known[-self.sasrec.config.max_len :]
        tokens = torch.tensor([[i + 1 for i in known]])  # item index i is token i + 1
        return self.sasrec.score_all(tokens, torch.tensor([len(known)]))[0].float()

    def allowed(
        self,
        taste: Taste,
        exclude: Iterable[str] = (),
        tags: Iterable[str] = (),
        blocked_tags: Iterable[str] = (),
    ) -> torch.Tensor:
        """(items,) bool: what may be recommended (see the filters in the module docstring)."""
        ok = torch.ones(self.num_items, dtype=torch.bool)
        for item in (*taste.seen, *exclude):
            i = self.index.get(item)
            if i is not None:
                ok[i] = False
        blocked, wanted = set(blocked_tags), set(tags)
        if blocked:
            ok &= ~self._any_tag(blocked)
        if wanted:
            ok &= self._any_tag(wanted)
        return ok

    def recommend(
        self,
        taste: Taste,
        k: int = 10,
        *,
        wish: torch.Tensor | None = None,
        wish_text: str = "",
        interests: Sequence[str] = (),
        exclude: Iterable[str] = (),
        tags: Iterable[str] = (),
        blocked_tags: Iterable[str] = (),
        diversity: float = 0.0,
    ) -> list[Recommendation]:
        """The best ``k`` items for the user, each with its reason."""
        signals = self._signals(taste, wish, interests)
        total = torch.stack(list(signals.values())).sum(0)
        ok = self.allowed(taste, exclude, tags, blocked_tags)
        total = total.masked_fill(~ok, -torch.inf)
        n = int(ok.sum())
        if n == 0 or k <= 0:
            return []
        if self.ranker is not None and signals.keys() & {"personal", "sequence"}:
            total = self._rank(taste, signals, total)
        pool = torch.topk(total, min(n, max(k, MMR_POOL) if diversity > 0 else k)).indices
        chosen = mmr(pool.tolist(), total, self.tags, k, diversity)
        because = self._because(taste, chosen)
        last = next((self.items[self.index[x]] for x in taste.recent if x in self.index), None)
        return [
            Recommendation(
                self.items[i],
                float(total[i]),
                *self._reason(i, signals, because, wish_text, last),
            )
            for i in chosen
        ]

    def _because(self, taste: Taste, chosen: list[int]) -> dict[int, Item]:
        """For each chosen item that a liked item contributes to positively, the liked item
        that contributes most (``weight * B[liked, item]``)."""
        liked = [(self.index[x], w) for x, w in taste.weights.items() if w > 0 and x in self.index]
        if not liked or not chosen:
            return {}
        rows = np.array([j for j, _ in liked])
        w = np.array([w for _, w in liked], np.float32)
        contrib = w[:, None] * self._ease_np[np.ix_(rows, chosen)]  # (liked, chosen)
        arg = contrib.argmax(0)  # numpy: microseconds for these small matrices
        best = contrib[arg, np.arange(len(chosen))]
        return {
            i: self.items[int(rows[a])]
            for i, b, a in zip(chosen, best.tolist(), arg.tolist(), strict=True)
            if b > 0
        }

    def _reason(
        self,
        i: int,
        signals: dict[str, torch.Tensor],
        because: dict[int, Item],
        wish_text: str,
        taste_last: Item | None = None,
    ) -> tuple[str, str]:
        """Why item ``i`` is in the list: the signal that gave it the most, if that is
        positive; for the personal signal, the liked item that contributed most
        (:meth:`_because`), if one did; else that it is popular."""
        source = max(signals, key=lambda s: float(signals[s][i]))
        if float(signals[source][i]) > 0:
            if source == "personal" and i in because:
                return f"because you liked {because[i].title}", source
            if source == "sequence" and taste_last is not None:
                return f"often next after {taste_last.title}", source
            if source == "wish" and wish_text:
                return f"matches “{wish_text}”", source
            if source == "tags":
                return f"in your interests: {', '.join(sorted(self.tags[i]))}", source
        item_tags = self.items[i].tags
        return (f"popular in {item_tags[0]}" if item_tags else "popular now"), "popular"

    def similar(self, item: str, k: int = 10) -> list[Recommendation]:
        """The items most like ``item``: first those its EASE row scores positive (what people
        who took it took), best first; then the rest by their text's cosine to it (by
        popularity without text vectors). Each says which it is."""
        i = self.index[item]
        title = self.items[i].title
        row = self.ease[i].clone()
        row[i] = -torch.inf
        positive = row > 0
        people = torch.topk(row, min(k, int(positive.sum()))).indices.tolist()
        if self.content is not None:
            other, source = self.content @ self.content[i], "content"
            reason = f"like {title} in its description"
        else:
            other, source, reason = self.popular.clone(), "popular", "popular now"
        other = other.masked_fill(positive, -torch.inf)
        other[i] = -torch.inf
        rest = torch.topk(other, min(k - len(people), self.num_items - 1 - int(positive.sum())))
        liked = f"people who liked {title} liked it"
        out = [Recommendation(self.items[j], float(row[j]), liked, "personal") for j in people]
        out += [
            Recommendation(self.items[j], float(other[j]), reason, source)
            for j in rest.indices.tolist()
        ]
        return out

    def search(self, query: str, k: int = 20) -> list[Item]:
        """Catalog items whose title, text or tags contain every word of ``query`` (case
        ignored), the most popular first."""
        words = query.casefold().split()
        hits = [
            i
            for i, item in enumerate(self.items)
            if all(w in f"{item.title} {item.text} {' '.join(item.tags)}".casefold() for w in words)
        ]
        hits.sort(key=lambda i: -float(self.counts[i]))
        return [self.items[i] for i in hits[:k]]

    def profile(self, taste: Taste, top: int = 5) -> dict[str, list]:
        """What the user's events show: their top tags (positive weights summed per tag), the
        recent positive items, and what they disliked or hid."""
        tag_weight: Counter[str] = Counter()
        for item, w in taste.weights.items():
            i = self.index.get(item)
            if i is not None and w > 0:
                for t in self.items[i].tags:
                    tag_weight[t] += w
        known = [self.items[self.index[x]] for x in taste.recent if x in self.index]
        disliked = [x for x, w in taste.weights.items() if w < 0 and x in self.index]
        return {
            "top_tags": [[t, round(w, 3)] for t, w in tag_weight.most_common(top)],
            "recent": known[:top],
            "disliked": [self.items[self.index[x]] for x in disliked][:top],
            "hidden": [self.items[self.index[x]] for x in taste.hidden if x in self.index][:top],
        }
