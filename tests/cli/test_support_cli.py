"""``llmos support kb``: a user's knowledge base built, searched and changed from the command
line, on the store and the index directory the server uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmos.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_knowledge_base_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_encoder: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/e5-zh here: the default encoder is missing
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'llmos.db'}")
    enc = ("--user", "shop", "--encoder", str(tiny_encoder))
    assert run(capsys, "users", "create", "shop")[0] == 0
    assert run(capsys, "support", "kb", "create", "faq", *enc)[0] == 0
    faq = tmp_path / "faq.tsv"
    faq.write_text(
        "question\tanswer\talternatives\n"
        "农民一直保护环境\t环境保护是大事。\t农民保护环境吗\n"
        "记者现在介绍艺术\t艺术介绍在晚上。\t\n",
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "support", "kb", "add", "faq", str(faq), *enc)
    assert (code, out.strip()) == (0, "added 2 entries to 'faq' (ids 1-2)")
    code, out, _ = run(capsys, "support", "kb", "search", "faq", "农民保护环境", "--k", "1", *enc)
    assert code == 0 and out.startswith("1. [1] 农民一直保护环境\n   -> 环境保护是大事。")
    code, out, _ = run(capsys, "support", "kb", "entries", "faq", *enc)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["alternatives"] for r in rows] == [["农民保护环境吗"], []]
    assert run(capsys, "support", "kb", "remove", "faq", "1", "7", *enc)[1].strip() == (
        "removed 1 of 2 entries from 'faq'"
    )
    code, out, _ = run(capsys, "support", "kb", "list", *enc)
    assert out.split() == ["faq", "1", "entries", "revision", "2"]
    # the index the server would use is saved under $LLMOS_HOME
    assert list((tmp_path / "home" / "apps" / "support").glob("kb-*/meta.json"))
    # its own encoder, named as the server names the models under --models-dir
    shutil.copytree(tiny_encoder, tmp_path / "models" / "tuned")
    own = (*enc, "--models-dir", str(tmp_path / "models"))
    code, out, _ = run(capsys, "support", "kb", "encoder", "faq", "tuned", *own)
    assert (code, out.strip()) == (0, "'faq' searches with 'tuned'")
    code, out, _ = run(capsys, "support", "kb", "list", *own)
    assert out.split() == ["faq", "1", "entries", "revision", "2", "encoder", "tuned"]
    code, out, _ = run(capsys, "support", "kb", "search", "faq", "农民保护环境", *own)
    assert code == 0 and out.startswith("1. [2] 记者现在介绍艺术")  # the only entry left
    code, _, err = run(capsys, "support", "kb", "search", "faq", "农民保护环境", *enc)
    assert code == 2 and "encoder 'tuned': models directory runs does not exist" in err
    code, _, err = run(capsys, "support", "kb", "encoder", "faq", "nope", *own)
    assert code == 2 and "no model named 'nope'" in err
    code, out, _ = run(capsys, "support", "kb", "encoder", "faq", *own)
    assert out.strip() == "'faq' searches with the default encoder"

    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nq,a\nq2\n", encoding="utf-8")
    code, _, err = run(capsys, "support", "kb", "add", "faq", str(bad), *enc)
    assert code == 2 and err.strip() == f"llmos: error: {bad}:3: 1 columns, the header has 2"
    code, _, err = run(capsys, "support", "kb", "search", "nope", "x", *enc)
    assert code == 2 and "no knowledge base named 'nope'" in err
    code, _, err = run(capsys, "support", "kb", "list", "--user", "nobody")
    assert code == 2 and "no user named 'nobody'" in err
    code, _, err = run(capsys, "support", "kb", "add", "faq", str(faq), "--user", "shop")
    assert code == 2 and "runs/e5-zh: no encoder checkpoint" in err
    # the desk: another user may ask once the knowledge base is public
    assert run(capsys, "users", "create", "buyer")[0] == 0
    ask = ("support", "ask", "shop/faq", "农民保护环境", "--user", "buyer")
    code, _, err = run(capsys, *ask, "--encoder", str(tiny_encoder))
    assert code == 2 and "no knowledge base 'shop/faq' that you may ask" in err
    code, out, _ = run(
        capsys, "support", "kb", "share", "faq", "--public", "--agents", "buyer", *enc
    )
    assert out.strip() == "'faq': public; agents: buyer"
    code, out, _ = run(capsys, *ask, "--encoder", str(tiny_encoder))
    assert code == 0 and out.splitlines()[1].endswith("; conversation 1, zh]")
    code, out, _ = run(
        capsys,
        "support",
        "ask",
        "-",
        "转人工",
        "--conversation",
        "1",
        "--user",
        "buyer",
        "--encoder",
        str(tiny_encoder),
    )
    assert out.splitlines()[1] == (
        "[escalate: the customer asked for a person; conversation 1, zh, ticket #1]"
    )
    assert run(capsys, "support", "kb", "delete", "faq", *enc)[0] == 0
    assert run(capsys, "support", "kb", "list", *enc)[1] == ""


def test_a_malformed_domain_file_stops_serve_and_ask_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "domain.yaml"
    bad.write_text("intents:\n  HassTurnOn:\n    action: fly\n", encoding="utf-8")
    assert main(["serve", "--support-domain", str(bad), "--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: HassTurnOn.action must be one of form, handoff, answer; got 'fly'" in err
    assert "Traceback" not in err


def test_kb_pairs_tune_an_encoder_that_the_desk_then_uses(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_encoder: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'llmos.db'}")
    enc = ("--user", "shop", "--encoder", str(tiny_encoder))
    assert run(capsys, "users", "create", "shop")[0] == 0
    assert run(capsys, "support", "kb", "create", "faq", *enc)[0] == 0
    faq = tmp_path / "faq.jsonl"
    rows = [
        {
            "question": "农民保护环境",
            "answer": "环境保护是大事。",
            "alternatives": ["农民一直保护环境", "今天农民保护环境", "农民经常保护环境"],
        },
        {
            "question": "记者介绍艺术",
            "answer": "艺术介绍在晚上。",
            "alternatives": ["记者现在介绍艺术", "昨天记者介绍艺术"],
        },
    ]
    faq.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert run(capsys, "support", "kb", "add", "faq", str(faq), *enc)[0] == 0
    code, out, _ = run(capsys, "support", "kb", "pairs", "faq", "--out", "pairs", *enc)
    assert (code, out.strip()) == (0, "pairs: 5 training and 2 validation pairs")
    valid = [json.loads(x) for x in (tmp_path / "pairs" / "valid.jsonl").read_text().splitlines()]
    assert [v["query"] for v in valid] == ["农民经常保护环境", "昨天记者介绍艺术"]
    code, out, _ = run(
        capsys,
        "finetune",
        "--config",
        str(Path(__file__).parents[2] / "configs" / "finetune" / "embed-kb.yaml"),
        f"init={tiny_encoder}",
        "data.dataset=pairs",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.eval_every=1",
        "train.progress=false",
        "train.precision=fp32",
    )
    assert code == 0 and "runs/embed-kb/checkpoint" in out
    code, out, _ = run(
        capsys,
        "support",
        "kb",
        "search",
        "faq",
        "农民保护环境",
        "--k",
        "1",
        "--user",
        "shop",
        "--encoder",
        "runs/embed-kb/checkpoint",
    )
    assert code == 0 and out.startswith("1. [1] 农民保护环境")

    (tmp_path / "one.jsonl").write_text(
        json.dumps({"question": "你好", "answer": "您好！"}, ensure_ascii=False) + "\n", "utf-8"
    )
    assert run(capsys, "support", "kb", "create", "tiny", *enc)[0] == 0
    assert run(capsys, "support", "kb", "add", "tiny", str(tmp_path / "one.jsonl"), *enc)[0] == 0
    code, _, err = run(capsys, "support", "kb", "pairs", "tiny", "--out", "p2", *enc)
    assert code == 2 and "'tiny': too few wordings to train on (1 training and 0 validation" in err
