"""The demo recommender: MovieLens-100K as the catalog and the interactions it learns from.

``llmos data prepare`` writes the packaged RecBole files to ``tasks/movielens/``. The 943
MovieLens users are a data set, not store users: they never sign in, so their 100,000 ratings
train the model (EASE learns which films go together from them) and are not copied into the
store. A store user's own events then fold into that model live. ``llmos setup`` (``make
run``) builds it as ``runs/movielens``: measured first on RecBole's protocol (EASE at ``reg``
400, the value best on validation; ``bench/recommend_eval.py``), then fitted on every rating,
with the films' text embedded by the encoder (``e5-zh``) for wishes and cold items. Its
popularity (the floor of a user with no events, the prior beside a wish) halves its weight
every :data:`HALF_LIFE_DAYS` days: on a split by time, the half-life best on validation, which
doubles plain counts' recall@10 on the newest tenth of the ratings
(``bench/recommend_popularity.py``).

Its sequential model (SASRec) would take setup 6-9 minutes more on 2 cores, so setup leaves
it to a background job: with ``--demo-user`` it queues ``recommend.sequential``
(:mod:`~llmos.apps.recommend.sequential`) for the demo user, which ``make run``'s server
worker runs while the demo is already served (:func:`queue_demo_sequential`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llmos.apps.recommend.sequential import (
    DEFAULT_STEPS,
    JOB_KIND,
    has_sequential,
    queue_sequential,
)
from llmos.apps.recommend.train import evaluate, read_catalog, train_recommender
from llmos.checkpoint.recommender import is_recommender
from llmos.data.interactions import read_inter
from llmos.errors import DataError
from llmos.jobs import submit_once
from llmos.paths import data_dir

log = logging.getLogger("llmos.apps.recommend")
REG = 400.0
HALF_LIFE_DAYS = 14.0


def movielens_files() -> tuple[Path, Path]:
    """The prepared MovieLens-100K ``.item`` and ``.inter`` files."""
    root = data_dir() / "tasks" / "movielens"
    items, inter = root / "ml-100k.item", root / "ml-100k.inter"
    for f in (items, inter):
        if not f.is_file():
            raise DataError(f"{f} not found: run `llmos data prepare` first")
    return items, inter


def setup_movielens(out: str | Path, encoder: str | Path | None) -> Path:
    """Evaluate, then train and save the MovieLens recommender to ``out``."""
    items_file, inter_file = movielens_files()
    items, inter = read_catalog(items_file), read_inter(inter_file)
    scores = evaluate(inter, regs=(REG,))[f"ease reg {REG:g}"]
    log.info(
        "RecBole protocol: recall@10 %.4f, NDCG@10 %.4f", scores["recall@10"], scores["ndcg@10"]
    )
    embed = None
    if encoder is not None:
        from llmos.apps.support.local import PipelineEmbedder

        embed = PipelineEmbedder(encoder)
    return train_recommender(
        items,
        out,
        inter=inter,
        catalog="movielens",
        reg=REG,
        half_life_days=HALF_LIFE_DAYS,
        embed=embed,
        encoder=Path(encoder).name if encoder is not None else None,
        encoder_digest=embed.name if embed is not None else None,
        evaluation=scores,
    )


def queue_demo_sequential(
    path: str | Path, user: str, steps: int = DEFAULT_STEPS, url: str | None = None
) -> tuple[dict[str, Any] | None, str]:
    """Queue the sequential model's training of the demo recommender at ``path`` as a job of
    the store user ``user`` (``llmos setup --demo-user``), unless the checkpoint has one
    already or such a job is queued or running. Returns the job (the new or the pending one;
    None when there is nothing to do) and what was done, in words."""
    path = Path(path)
    if not is_recommender(path):
        return None, f"no demo recommender at {path}"
    if has_sequential(path):
        return None, f"the demo recommender {path} has its sequential model"
    job, new = submit_once(
        user,
        JOB_KIND,
        "checkpoint",
        str(path.resolve()),
        lambda jobs, owner: queue_sequential(jobs, owner, path, steps),
        url,
    )
    if not new:
        return job, f"job {job['id']} ({job['status']}) is training it already"
    return job, f"queued job {job['id']} ({steps} SASRec steps) for user {user!r}"
