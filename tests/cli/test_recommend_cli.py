"""``llmos recommend``: train from files, act for a store user, evaluate; mistakes exit 2 with
the file and line named, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmos.cli import main
from llmos.store.db import Store

CATALOG = [
    {"id": "c1", "title": "Laugh Out", "tags": ["Comedy"]},
    {"id": "c2", "title": "Funny Days", "tags": ["Comedy"]},
    {"id": "c3", "title": "Big Joke", "tags": ["Comedy"]},
    {"id": "h1", "title": "Night Fear", "tags": ["Horror"]},
    {"id": "h2", "title": "The Cellar", "tags": ["Horror"]},
    {"id": "h3", "title": "Scream Lake", "tags": ["Horror"]},
]


def files(tmp_path: Path) -> tuple[Path, Path]:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in CATALOG), encoding="utf-8")
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(10):
        taste = ("c1", "c2", "c3") if u % 2 else ("h1", "h2", "h3")
        rows += [f"u{u}\t{i}\t4\t{u}" for i in taste[: 2 + (u // 2) % 2]]
    inter = tmp_path / "x.inter"
    inter.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return items, inter


def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The 'films' recommender trained by the CLI from :func:`files` (a store of its own);
    its checkpoint and its interactions file."""
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'llmos.db'}")
    items, inter = files(tmp_path)
    out = tmp_path / "rec"
    args = ["--items", str(items), "--inter", str(inter), "--no-encoder", "--reg", "1"]
    assert main(["recommend", "train", *args, "--catalog", "films", "--out", str(out)]) == 0
    return out, inter


def test_train_then_recommend_for_a_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = trained(tmp_path, monkeypatch)
    assert "saved the 'films' recommender (6 items)" in capsys.readouterr().out
    Store().create_user("ann")
    model = ["--user", "ann", "--model", str(out)]
    assert main(["recommend", "event", *model, "like", "h1"]) == 0
    assert main(["recommend", "recommend", *model, "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()[-2:]
    assert all("Horror" in line and "because you liked Night Fear" in line for line in lines)
    assert main(["recommend", "similar", "c1", "--k", "2", "--model", str(out)]) == 0
    assert "people who liked Laugh Out liked it" in capsys.readouterr().out
    assert main(["recommend", "search", "scream", "--model", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "[h3] Scream Lake (Horror)"
    assert main(["recommend", "profile", *model]) == 0
    assert json.loads(capsys.readouterr().out)["recent"] == ["[h1] Night Fear"]


def test_movielens_popularity_decays_by_default_a_users_catalog_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmos.apps.recommend.demo import HALF_LIFE_DAYS
    from llmos.checkpoint.recommender import read_recommender

    out, _ = trained(tmp_path, monkeypatch)  # --items: no decay unless asked
    assert read_recommender(out).meta["half_life_days"] is None
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    root = tmp_path / "home" / "data" / "tasks" / "movielens"
    root.mkdir(parents=True)
    _, inter = files(tmp_path)
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\n"
        + "".join(f"{r['id']}\t{r['title']}\n" for r in CATALOG),
        encoding="utf-8",
    )
    (root / "ml-100k.inter").write_text(inter.read_text(encoding="utf-8"), encoding="utf-8")
    for extra, want in (([], HALF_LIFE_DAYS), (["--half-life-days", "3"], 3.0)):
        ml = tmp_path / f"ml{len(extra)}"
        argv = ["recommend", "train", "--no-encoder", "--reg", "1", "--out", str(ml), *extra]
        assert main(argv) == 0
        assert read_recommender(ml).meta["half_life_days"] == want


def test_evaluate_writes_the_protocols_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, inter = files(tmp_path)
    out = tmp_path / "m.json"
    assert (
        main(["recommend", "evaluate", "--inter", str(inter), "--reg", "1", "--json", str(out)])
        == 0
    )
    table = capsys.readouterr().out
    assert "recall@10" in table and "ease reg 1" in table
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"popularity", "ease reg 1"} and metrics["ease reg 1"]["users"] == 10


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: p.write_text('{"id": "a", "title": "A"}\n{"id": "a", "title": "B"}\n'),
            ":2: item id 'a' appears twice",
        ),
        (lambda p: p.write_text('{"id": "a", "title": "A"}\nnope\n'), ":2: not JSON"),
    ],
)
def test_a_bad_catalog_exits_2_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    _, inter = files(tmp_path)
    bad = tmp_path / "bad.jsonl"
    make(bad)
    argv = ["recommend", "train", "--items", str(bad), "--inter", str(inter), "--no-encoder"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}{message}" in err and "Traceback" not in err


def test_user_mistakes_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'llmos.db'}")
    items, inter = files(tmp_path)
    out = tmp_path / "rec"
    main(
        [
            "recommend",
            "train",
            "--items",
            str(items),
            "--inter",
            str(inter),
            "--no-encoder",
            "--out",
            str(out),
        ]
    )
    Store().create_user("ann")
    model = ["--model", str(out)]
    cases = [
        (["recommend", "recommend", "--user", "nobody", *model], "no user named 'nobody'"),
        (["recommend", "event", "--user", "ann", *model, "like", "zz"], "no item 'zz'"),
        (["recommend", "event", "--user", "ann", *model, "rate", "c1"], "needs a value"),
        (["recommend", "event", "--user", "ann", *model, "rate", "c1", "nan"], "finite number"),
        (["recommend", "recommend", "--user", "ann", "--model", str(tmp_path)], "no recommender"),
        (["recommend", "recommend", "--user", "ann", *model, "--diversity", "3"], "diversity"),
        (
            [
                "recommend",
                "train",
                "--items",
                str(items),
                "--out",
                str(out),
                "--encoder",
                str(tmp_path / "none"),
            ],
            "no encoder checkpoint",
        ),
        (
            ["recommend", "train", "--items", str(items), "--no-encoder", "--ranker"],
            "give --inter",
        ),
        (
            [
                *("recommend", "train", "--items", str(items), "--inter", str(inter)),
                *("--no-encoder", "--mf-steps", "5", "--out", str(tmp_path / "mf")),
            ],
            "the MF model serves through the learned ranker: add --ranker",
        ),
        (
            ["recommend", "retrain", str(out), "--sasrec-steps", "0"],
            "--sasrec-steps must be an integer from 1 to 20000, got 0",
        ),
    ]
    capsys.readouterr()
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_retrain_needs_no_interactions_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.checkpoint.recommender import read_recommender

    out, inter = trained(tmp_path, monkeypatch)
    first = read_recommender(out).weights["ease.weight"]
    inter.unlink()  # the checkpoint keeps what it learned from
    assert main(["recommend", "retrain", str(out), "--out", str(tmp_path / "same")]) == 0
    assert torch.equal(read_recommender(tmp_path / "same").weights["ease.weight"], first)
    store = Store()
    for name in ("ann", "bob"):
        user = store.create_user(name)[0]
        store.add_catalog_events(user.id, "films", [("like", "c1", None), ("like", "h1", None)])
    store.close()
    capsys.readouterr()
    assert main(["recommend", "retrain", str(out), "--from-store"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"retrained the 'films' recommender (6 items, 28 interactions of 12 users) to {out}"
    )
    again = read_recommender(out).weights["ease.weight"]
    assert again[0, 3] > first[0, 3]  # c1 and h1 now go together


def test_retrain_can_add_the_sequential_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.checkpoint.recommender import read_recommender

    out, inter = trained(tmp_path, monkeypatch)
    assert main(["recommend", "retrain", str(out), "--sasrec-steps", "3"]) == 2
    assert "SASRec needs a user with two or more training interactions" in capsys.readouterr().err
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows += [f"u{u}\t{c['id']}\t4\t{t}" for u in range(4) for t, c in enumerate(CATALOG)]
    inter.write_text("\n".join(rows) + "\n", encoding="utf-8")  # six items a user
    items = tmp_path / "items.jsonl"
    args = ["--items", str(items), "--inter", str(inter), "--no-encoder", "--out", str(out)]
    assert main(["recommend", "train", *args]) == 0
    assert read_recommender(out).sasrec is None
    assert main(["recommend", "retrain", str(out), "--sasrec-steps", "3"]) == 0
    ck = read_recommender(out)
    assert ck.sasrec is not None and ck.meta["sasrec"]["steps"] == 3
    assert ck.meta["retrained"]["sasrec"] is None  # trained, not dropped


def test_train_with_a_ranker_reports_it_and_refuses_too_short_histories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.checkpoint.recommender import read_recommender

    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'llmos.db'}")
    items, inter = files(tmp_path)
    argv = ["recommend", "train", "--items", str(items), "--inter", str(inter), "--no-encoder"]
    assert main([*argv, "--ranker", "--out", str(tmp_path / "r")]) == 0
    # four users took three films: one to learn from, one to validate on, one to test on
    assert "ranker: 4 lists; next item on test, hit@10 / NDCG@10: sum " in capsys.readouterr().out
    assert read_recommender(tmp_path / "r").ranker is not None
    lightgcn = ["--mf-steps", "4", "--mf-model", "lightgcn", "--out", str(tmp_path / "g")]
    assert main([*argv, "--ranker", *lightgcn]) == 0
    assert read_recommender(tmp_path / "g").meta["mf"]["model"] == "lightgcn"
    capsys.readouterr()
    short = tmp_path / "short.inter"
    lines = inter.read_text().splitlines()
    short.write_text(
        "\n".join(lines[:1] + [x for x in lines[1:] if x.split("\t")[1] not in ("c3", "h3")]) + "\n"
    )
    argv[argv.index(str(inter))] = str(short)
    assert main([*argv, "--ranker", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no user to train the ranker on" in err and "Traceback" not in err
