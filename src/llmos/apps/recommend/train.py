"""Training and evaluating a catalog's recommender (``llmos recommend train|retrain|evaluate``).

A catalog is a JSONL file (one ``{"id", "title", "text", "tags"}`` a line; ``text`` and
``tags`` optional) or a RecBole ``.item`` file (MovieLens: title, year, genres). Interactions
are a RecBole ``.inter`` file (``llmos.data.interactions``), plus, optionally, the events the
store holds for the catalog (every user's likes, views and ratings: see
:func:`~llmos.apps.recommend.events.weight`; their negatives are left out, as the model learns
from what people took).

:func:`train_recommender` fits on *all* the interactions it is given (a deployed model) and
keeps the file's interactions in the checkpoint (``train.*``,
:mod:`llmos.checkpoint.recommender`), so that :func:`retrain_recommender` can fit it again
later from the checkpoint alone, with the store's events of that day and, if need be, a new
item list (the server's ``PUT /v1/apps/recommend/catalog`` and ``POST .../train``).
:func:`evaluate` measures the same models on RecBole's protocol (each user's interactions cut
8:1:1, full ranking; ``llmos.train.ranking``), where the model sees the train part only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from llmos.apps.recommend.events import Act, fold
from llmos.apps.recommend.generators import fit_mf, fit_sequential, popularity
from llmos.apps.recommend.ranking import fit_app_ranker
from llmos.checkpoint.recommender import RecommenderCheckpoint, save_recommender
from llmos.data.interactions import (
    Interactions,
    Item,
    read_atomic_items,
    read_jsonl_items,
    split_by_ratio,
)
from llmos.errors import DataError, LlmosError
from llmos.models.itemitem import EASE, Popularity
from llmos.store.db import Store
from llmos.train.ranking import full_ranking

log = logging.getLogger("llmos.apps.recommend")
REG = 400.0  # EASE's L2 weight, best on MovieLens-100K's validation (bench/recommend_eval.py)
# texts, kind ("passage" for items) -> (len(texts), dim) unit vectors
Embed = Callable[[list[str], str], Any]
SASREC_DROPPED = (
    "a retraining keeps no sequential model: it needs a training run "
    "(llmos recommend train --sasrec-steps N)"
)
MF_DROPPED = (
    "a retraining keeps no MF model: it needs a training run (llmos recommend train --mf-steps N)"
)
RANKER_DROPPED = (
    "a retraining keeps no learned ranker: it is trained on held-out items of the "
    "interactions file (llmos recommend train --ranker)"
)


def read_catalog(path: str | Path) -> list[Item]:
    """A catalog file: RecBole ``.item`` by its suffix, else JSONL (errors name the line)."""
    path = Path(path)
    if path.suffix == ".item":
        return list(read_atomic_items(path).values())
    return read_jsonl_items(path)


def item_text(item: Item) -> str:
    """The text an item is embedded from: ``title (text): tag, tag``."""
    text = f"{item.title} ({item.text})" if item.text else item.title
    return f"{text}: {', '.join(item.tags)}" if item.tags else text


def in_catalog_order(items: list[Item], inter: Interactions) -> Interactions:
    """``inter`` with its item vocabulary replaced by the catalog's (item ``i`` is
    ``items[i]``), so that its matrix and its sequences line up with the model's rows;
    ``inter`` itself when it is in that order already (``train_recommender`` orders once and
    hands the result on).

    Raises:
        DataError: an interaction names an item the catalog lacks.
    """
    ids = tuple(item.id for item in items)
    if inter.items == ids:
        return inter
    index = {item.id: i for i, item in enumerate(items)}
    col = np.array([index.get(x, -1) for x in inter.items], np.int64)[inter.item]
    missing = np.flatnonzero(col < 0)
    if len(missing):
        first = inter.items[inter.item[missing[0]]]
        raise DataError(
            f"{len(missing)} interactions name items the catalog lacks (first: {first!r}): "
            "give the catalog file these items were rated in"
        )
    return Interactions(inter.users, ids, inter.user, col, inter.rating, inter.timestamp)


def catalog_matrix(
    items: list[Item],
    inter: Interactions | None,
    store_events: dict[int, list[Act]] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The (users, items) 0/1 matrix over the catalog's order, and, per stored interaction,
    its item index and timestamp (for popularity). Users of the file and of the store are
    distinct rows; a store user's positives are the items of positive weight in their taste.

    Raises:
        DataError: an interaction names an item the catalog lacks.
    """
    index = {item.id: i for i, item in enumerate(items)}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    times: list[np.ndarray] = []
    users = 0
    if inter is not None:
        ordered = in_catalog_order(items, inter)
        rows.append(ordered.user)
        cols.append(ordered.item)
        times.append(ordered.timestamp)
        users = inter.num_users
    for acts in (store_events or {}).values():
        taste = fold(acts)
        known = [index[x] for x, w in taste.weights.items() if w > 0 and x in index]
        rows.append(np.full(len(known), users, np.int64))
        cols.append(np.asarray(known, np.int64))
        times.append(np.full(len(known), np.nan))
        users += 1
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(max(users, 1), len(items)))
    m.data[:] = 1.0
    return m, c, np.concatenate(times) if times else np.zeros(0)


def store_acts(store: Store, catalog: str) -> dict[int, list[Act]]:
    """Every store user's events on ``catalog``, oldest first, by user id (what training with
    the store learns from; it reads every user's rows)."""
    rows = store.all_catalog_events(catalog)
    return {u: [Act(e.kind, e.item or "", e.value) for e in es] for u, es in rows.items()}


def train_recommender(
    items: list[Item],
    out: str | Path,
    *,
    inter: Interactions | None = None,
    store_events: dict[int, list[Act]] | None = None,
    catalog: str = "default",
    reg: float = REG,
    half_life_days: float | None = None,
    embed: Embed | None = None,
    encoder: str | None = None,
    encoder_digest: str | None = None,
    evaluation: dict[str, float] | None = None,
    sasrec_steps: int = 0,
    sasrec_run: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
    mf_steps: int = 0,
    mf_model: str = "bpr",
    ranker: bool = False,
    allow_empty: bool = False,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Fit EASE and popularity on every interaction given, embed the items' text when
    ``embed`` (``texts, kind -> unit vectors``) is given, and save the checkpoint, with
    ``inter``'s interactions in it (``train.*``) and, in its ``task.json``, ``evaluation`` (the
    metrics measured before) and ``meta``'s fields. With ``sasrec_steps``, a sequential model
    is trained on ``inter`` too (its run in ``sasrec_run``, resumed there if it was cut off,
    else in a temp directory; ``on_step(step, sasrec_steps)`` after each of its steps, what
    it raises stopping the training and writing nothing); with ``mf_steps``, a BPR-MF (or, with
    ``mf_model`` ``lightgcn``, a LightGCN) whose item vectors serve folded-in users (both
    :mod:`llmos.apps.recommend.generators`); with ``ranker``, a learned ranker
    (:func:`~llmos.apps.recommend.ranking.fit_app_ranker`).

    Raises:
        LlmosError: ``mf_steps`` without ``ranker`` (the MF model serves through it).
        DataError: no interaction to learn from (unless ``allow_empty``: a new catalog that
            nobody has taken yet, whose model then ranks by text and tags only), or one that
            names an item the catalog lacks.
    """
    ordered = in_catalog_order(items, inter) if inter is not None else None
    x, item, timestamp = catalog_matrix(items, ordered, store_events)
    if x.nnz == 0 and not allow_empty:
        raise DataError("no interactions to learn from: give --inter or store events")
    log.info("EASE over %d users x %d items (%d interactions), reg %g", *x.shape, x.nnz, reg)
    weights = {
        "ease.weight": EASE.fit(x, reg=reg).weight,
        "popularity.counts": popularity(len(items), item, timestamp, half_life_days),
    }
    if ordered is not None:  # kept, so that the checkpoint can be retrained without the file
        weights["train.user"] = torch.from_numpy(ordered.user.astype(np.int64))
        weights["train.item"] = torch.from_numpy(ordered.item.astype(np.int64))
        weights["train.time"] = torch.from_numpy(ordered.timestamp.astype(np.float64))
    if embed is not None:
        log.info("embedding %d items' text", len(items))
        weights["content.vectors"] = torch.from_numpy(
            np.asarray(embed([item_text(i) for i in items], "passage"), np.float32)
        )
    sasrec = None
    if mf_steps > 0 and not ranker:  # its candidates and scores reach a list only through it
        raise LlmosError("the MF model serves through the learned ranker: add --ranker")
    if (sasrec_steps > 0 or mf_steps > 0 or ranker) and ordered is None:
        what = (
            "the sequential model"
            if sasrec_steps > 0
            else "the MF model"
            if mf_steps > 0
            else "the learned ranker"
        )
        raise DataError(f"{what} learns from an interactions file: give --inter")
    if sasrec_steps > 0:
        assert ordered is not None
        log.info("SASRec: %d steps over %d interactions", sasrec_steps, len(ordered))
        seq_weights, sasrec, sasrec_valid = fit_sequential(
            ordered, sasrec_steps, run_dir=sasrec_run, on_step=on_step
        )
        weights.update(seq_weights)
    mf = None
    if mf_steps > 0:
        assert ordered is not None
        log.info("%s: %d steps over %d interactions", mf_model, mf_steps, len(ordered))
        mf_vectors, mf = fit_mf(ordered, mf_steps, model=mf_model)
        weights["mf.items"] = mf_vectors
    ranker_config = ranker_report = None
    if ranker:
        assert ordered is not None
        rank_weights, ranker_config, ranker_report = fit_app_ranker(
            items,
            ordered,
            reg=reg,
            half_life_days=half_life_days,
            content=weights.get("content.vectors"),
            sasrec=(seq_weights, sasrec) if sasrec is not None else None,
            mf=(weights["mf.items"], mf) if mf is not None else None,
        )
        weights.update(rank_weights)
    task = {
        "catalog": catalog,
        "ease_reg": reg,
        "half_life_days": half_life_days,
        "encoder": encoder if embed is not None else None,
        "encoder_digest": encoder_digest if embed is not None else None,
        "trained_on": {
            "users": int(x.shape[0]) if x.nnz else 0,
            "interactions": int(x.nnz),
            "file_interactions": len(ordered) if ordered is not None else 0,
            "store_users": len(store_events or {}),
            "items": len(items),
        },
        "evaluation": evaluation,
        "sasrec": {"steps": sasrec_steps, "valid": sasrec_valid} if sasrec else None,
        "mf": mf,
        "ranker": ranker_report,
        **(meta or {}),
    }
    return save_recommender(out, items, weights, task, sasrec, ranker_config)


def kept_interactions(
    ckpt: RecommenderCheckpoint, items: Sequence[Item] | None = None
) -> Interactions | None:
    """The interactions ``ckpt`` keeps from the file it was trained on, restricted to the
    items of ``items`` (default: its own catalog): an interaction with an item ``items``
    lacks is dropped, and a user left with none with it. Item ids are the checkpoint's (order
    them with :func:`in_catalog_order`); users are numbered anew. None when it keeps none
    (trained on store events only, or before the interactions were kept)."""
    kept = ckpt.interactions
    if kept is None:
        return None
    user, item, time = (t.numpy() for t in kept)
    if items is not None:
        wanted = {i.id for i in items}
        rows = np.array([i.id in wanted for i in ckpt.items], bool)[item]
        user, item, time = user[rows], item[rows], time[rows]
    users, user = np.unique(user, return_inverse=True)
    return Interactions(
        tuple(str(u) for u in users),
        tuple(i.id for i in ckpt.items),
        user.astype(np.int64),
        item.astype(np.int64),
        np.ones(len(item), np.float32),
        time.astype(np.float64),
    )


def retrain_recommender(
    ckpt: RecommenderCheckpoint,
    out: str | Path,
    *,
    items: list[Item] | None = None,
    store_events: dict[int, list[Act]] | None = None,
    reg: float | None = None,
    half_life_days: float | None = None,
    embed: Embed | None = None,
    encoder: str | None = None,
    encoder_digest: str | None = None,
    allow_empty: bool = False,
    sasrec_steps: int = 0,
    sasrec_run: str | Path | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Path:
    """Fit ``ckpt``'s catalog again and save it to ``out`` (which may be ``ckpt``'s own
    directory: the write is atomic).

    What it learns from: the interactions the checkpoint keeps (:func:`kept_interactions`;
    those of items that ``items`` no longer has are dropped) plus ``store_events``, the store
    users' events on the catalog as they are now. With no store events and the same items,
    the EASE weights and the popularity are exactly those of the original training. The
    catalog's name stays the checkpoint's; ``reg`` and ``half_life_days`` too, unless given.

    Content vectors: an item whose text the checkpoint embedded keeps its vector when the
    encoder is the same (``encoder_digest`` is the checkpoint's, or no ``embed`` is given);
    the others are embedded by ``embed``. Without ``embed``, a catalog with a text the
    checkpoint never embedded gets no content vectors (no wishes, no ranking of items nobody
    took), and the log says so.

    A sequential model (SASRec) is *not* carried over: its weights were trained over the old
    interactions. With ``sasrec_steps`` a new one is trained on the kept interactions
    (``sasrec_run`` and ``on_step`` as in :func:`train_recommender`; the server's
    ``recommend.sequential`` job, :mod:`llmos.apps.recommend.sequential`); without, the
    checkpoint has none and ``task.json`` says so (``retrained.sasrec``). Nor are an MF
    model (``retrained.mf``) and a learned ranker (``retrained.ranker``): both are trained on
    the file's interactions.
    """
    items = list(items) if items is not None else list(ckpt.items)
    inter = kept_interactions(ckpt, items)
    if sasrec_steps > 0 and inter is None:
        raise DataError(
            f"{ckpt.path}: the checkpoint keeps no interactions file to train the sequential "
            "model on (train it with llmos recommend train --inter FILE --sasrec-steps N)"
        )
    kept = len(inter) if inter is not None else 0
    total = len(ckpt.weights["train.item"]) if inter is not None else 0
    content, encoder, encoder_digest, reuse = _content(ckpt, items, embed, encoder, encoder_digest)
    dropped = ckpt.sasrec is not None and sasrec_steps <= 0
    if dropped:
        log.warning("retraining %s without its sequential model: %s", ckpt.path, SASREC_DROPPED)
    if "mf.items" in ckpt.weights:
        log.warning("retraining %s without its MF model: %s", ckpt.path, MF_DROPPED)
    if ckpt.ranker is not None:
        log.warning("retraining %s without its learned ranker: %s", ckpt.path, RANKER_DROPPED)
    half_life = ckpt.meta.get("half_life_days") if half_life_days is None else half_life_days
    return train_recommender(
        items,
        out,
        inter=inter,
        store_events=store_events,
        catalog=ckpt.catalog,
        reg=float(ckpt.meta.get("ease_reg", REG)) if reg is None else reg,
        half_life_days=half_life,
        embed=content,
        encoder=encoder,
        encoder_digest=encoder_digest,
        allow_empty=allow_empty,
        sasrec_steps=sasrec_steps,
        sasrec_run=sasrec_run,
        on_step=on_step,
        meta={
            "retrained": {
                "kept_interactions": kept,
                "dropped_interactions": total - kept,
                "dropped_items": len({i.id for i in ckpt.items} - {i.id for i in items}),
                "content": reuse,
                "sasrec": SASREC_DROPPED if dropped else None,
                "mf": MF_DROPPED if "mf.items" in ckpt.weights else None,
                "ranker": RANKER_DROPPED if ckpt.ranker is not None else None,
            }
        },
    )


def _content(
    ckpt: RecommenderCheckpoint,
    items: list[Item],
    embed: Embed | None,
    encoder: str | None,
    digest: str | None,
) -> tuple[Embed | None, str | None, str | None, dict[str, int] | None]:
    """What embeds the retrained catalog (None: no content vectors), the encoder and digest
    it records, and how many vectors are reused and embedded (see
    :func:`retrain_recommender`). Vectors are looked up by the item's text, so an item whose
    title, text or tags changed is embedded again."""
    old = ckpt.weights.get("content.vectors")
    same = old is not None and (
        embed is None or (digest is not None and digest == ckpt.meta.get("encoder_digest"))
    )
    known = {item_text(i): old[r].numpy() for r, i in enumerate(ckpt.items)} if same else {}
    texts = [item_text(i) for i in items]
    missing = sorted(set(texts) - set(known))
    if missing and embed is None:
        if old is not None:
            log.warning(
                "no encoder to embed the %d item texts without a vector: the model has no "
                "content vectors",
                len(missing),
            )
        return None, None, None, None
    if embed is None:  # every vector is the checkpoint's
        encoder, digest = ckpt.meta.get("encoder"), ckpt.meta.get("encoder_digest")
    counts = {"reused": sum(t in known for t in texts), "embedded": len(missing)}

    def reusing(batch: list[str], kind: str) -> np.ndarray:
        vectors = dict(known)
        if missing:
            assert embed is not None  # returned above otherwise
            vectors.update(zip(missing, np.asarray(embed(missing, kind), np.float32), strict=True))
        return np.stack([vectors[t] for t in batch]).astype(np.float32)

    return reusing, encoder, digest, counts


def evaluate(
    inter: Interactions, regs: Iterable[float] = (250.0, 400.0), k: int = 10
) -> dict[str, dict[str, float]]:
    """Popularity and EASE (at each ``reg``) on RecBole's protocol: fitted on the train part,
    scored on test, the user's train and valid items masked (their train items the input)."""
    train, valid, test = split_by_ratio(inter)
    x_tr, x_va, x_te = train.matrix(), valid.matrix(), test.matrix()
    seen = x_tr + x_va
    rows = torch.from_numpy(x_tr.toarray())
    out: dict[str, dict[str, float]] = {}
    pop = Popularity.fit(x_tr)
    out["popularity"] = full_ranking(lambda u: pop(rows[u]), seen, x_te, k)
    for reg in regs:
        model = EASE.fit(x_tr, reg=reg)
        out[f"ease reg {reg:g}"] = full_ranking(lambda u, m=model: m(rows[u]), seen, x_te, k)
    return out
