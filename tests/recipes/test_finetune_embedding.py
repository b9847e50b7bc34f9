"""``task: embedding``: a retrieval encoder fine-tuned on (query, positive) pairs with
in-batch negatives. The loss is checked against a direct computation of
sentence-transformers' MultipleNegativesRankingLoss, the false-negative masks against pairs
built by hand, and the whole run on a tiny encoder that must learn a mapping no token overlap
gives away, then resume exactly."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import llmos
from llmos.checkpoint.io import read_checkpoint
from llmos.config import FinetuneConfig, load_config
from llmos.data.readers import Pair, read_pairs
from llmos.errors import ConfigError, DataError
from llmos.recipes.finetune import finetune
from llmos.train.metrics import retrieval_metrics
from llmos.train.tasks.embed import ContrastiveTask, encode_pairs, in_batch_logits

# Each query names a subject; its passage names the object paired with that subject. No
# token of the query is in its passage, so a fresh encoder cannot tell which passage is
# whose: the pairing must be learned.
SUBJECTS = ["我们", "老师", "学生", "公司", "记者", "农民"]
OBJECTS = ["经济", "文化", "城市", "技术", "教育", "历史"]
ADVERBS = ["今天", "昨天", "去年", "明年", "现在", "一直", "经常", "已经"]
VERBS = ["喜欢", "研究", "参观", "讨论", "建设", "保护", "发展", "支持"]


def write_pairs(path: Path, n: int, seed: int, adverbs: list[str], verbs: list[str]) -> None:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randrange(len(SUBJECTS))
        query = f"{rng.choice(adverbs)}{SUBJECTS[k]}"
        rows.append({"query": query, "positive": f"{rng.choice(verbs)}{OBJECTS[k]}。"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pairs")
    write_pairs(d / "train.jsonl", 300, 0, ADVERBS[:6], VERBS[:6])
    # valid and test word the pairs with adverbs and a verb never seen in training, one
    # passage per subject
    write_pairs(d / "valid.jsonl", 30, 1, ADVERBS[6:], VERBS[6:7])
    write_pairs(d / "test.jsonl", 40, 2, ADVERBS[6:], VERBS[7:])
    return d


@pytest.fixture(scope="module")
def encoder(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny encoder as an asymmetric retrieval model (E5's prefixes in its task.json)."""
    out = tmp_path_factory.mktemp("e5like") / "enc"
    shutil.copytree(tiny_encoder, out)
    spec = {"task": "embedding", "pooling": "mean", "normalize": True, "max_length": 32}
    spec |= {"query_prefix": "问：", "passage_prefix": "答："}
    (out / "task.json").write_text(json.dumps(spec, ensure_ascii=False))
    return out


def args(encoder: Path, data: Path, out: Path, name: str) -> list[str]:
    return [
        "task=embedding",
        f"init={encoder}",
        f"data.dataset={data}",
        "data.max_length=32",
        f"out_dir={out}",
        f"name={name}",
        "train.batch_size=16",
        "train.progress=false",
        "train.precision=fp32",
        "optim.lr=3e-3",
        "optim.warmup_steps=5",
    ]


def test_learns_the_pairing_and_records_how_it_is_read(encoder: Path, pairs: Path, tmp_path):
    argv = [*args(encoder, pairs, tmp_path, "toy"), "train.max_steps=80", "train.eval_every=20"]
    result = finetune(load_config(FinetuneConfig, None, argv))
    report = json.loads((result.run_dir / "report.json").read_text())
    assert report["test_queries"] == 40
    # chance is 1/6 at acc@1 (six passages)
    assert report["test_init"]["acc@1"] < 0.5
    assert report["test"]["acc@1"] >= 0.9 > report["test_init"]["acc@1"] + 0.3
    assert (result.run_dir / "retrieval_test.png").stat().st_size > 0
    assert result.best is not None and set(result.best["metrics"]) >= {"mrr", "acc@1"}

    ckpt = read_checkpoint(result.checkpoint)
    # the pretraining heads and the pooler, which the vectors do not read, are kept untrained
    before, after = read_checkpoint(encoder).weights(), ckpt.weights()
    kept = [k for k in after if not k.startswith(("bert.embeddings.", "bert.layers."))]
    assert any(k.startswith("mlm.") for k in kept)
    assert all(torch.equal(after[k], before[k]) for k in kept)
    key = "bert.layers.0.ffn.up.weight"
    assert not torch.equal(after[key], before[key])  # the encoder itself was trained
    assert ckpt.task.kind == "embedding"
    assert (ckpt.task.query_prefix, ckpt.task.passage_prefix) == ("问：", "答：")
    assert ckpt.task.extra["contrastive"] == {"pairs": 300, "scale": 20.0, "symmetric": False}
    # The saved model embeds with its prefixes: the report's number is what embed() gives.
    pipe = llmos.load(result.checkpoint)
    test = read_pairs(pairs / "test.jsonl").rows
    corpus = sorted({p for x in test for p in x.positives})
    scores = (
        pipe.embed([x.query for x in test], kind="query") @ pipe.embed(corpus, kind="passage").T
    )
    relevant = [{corpus.index(p) for p in x.positives} for x in test]
    # The report's corpus is in first-seen order; the scores don't depend on it.
    assert retrieval_metrics(scores, relevant)["mrr"] == pytest.approx(report["test"]["mrr"])


def test_resumes_to_the_same_weights(encoder: Path, pairs: Path, tmp_path) -> None:
    argv = [
        *args(encoder, pairs, tmp_path, "full"),
        "contrastive.symmetric=true",
        "train.max_steps=6",
        "train.eval_every=3",
        "train.save_every=3",
        "patience=null",
    ]
    full = finetune(load_config(FinetuneConfig, None, argv))
    killed = tmp_path / "killed"
    shutil.copytree(full.run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "step-0000006")
    shutil.rmtree(killed / "checkpoint")
    resumed = finetune(load_config(FinetuneConfig, None, [*argv, "name=killed"]), resume=True)
    step6 = Path("checkpoints") / "step-0000006" / "model.safetensors"
    x, y = load_file(str(full.run_dir / step6)), load_file(str(resumed.run_dir / step6))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def collator(enc, symmetric: bool) -> ContrastiveTask:
    """A task over ``enc`` for its collate (no validation split)."""
    return ContrastiveTask(
        enc,
        ([], [], []),
        batch_size=len(enc.queries),
        seed=0,
        pad_id=0,
        pooling="mean",
        normalize=True,
        scale=20.0,
        symmetric=symmetric,
    )


def mnrl_reference(q: np.ndarray, c: np.ndarray, scale: float, skip: np.ndarray) -> float:
    """sentence-transformers' MultipleNegativesRankingLoss written out: the mean over queries
    of -log softmax(scale * cos(q_i, c_j))_i, leaving out the candidates ``skip[i, j]``."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(q)):
        logits = np.array([scale * qn[i] @ cn[j] for j in range(len(c)) if not skip[i, j]])
        own = scale * qn[i] @ cn[i]
        total += -(own - np.log(np.exp(logits).sum()))
    return total / len(q)


def test_the_loss_is_multiple_negatives_ranking_with_false_negatives_left_out() -> None:
    gen = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(k, 8, generator=gen, dtype=torch.float64) for k in (4, 4, 2))
    skip = np.zeros((4, 6), dtype=bool)
    skip[1, 3] = skip[3, 1] = True  # rows 1 and 3 share a positive text
    skip[2, 4] = True  # the first hard negative also answers query 2
    logits = in_batch_logits(q, p, n, 20.0, torch.from_numpy(skip))
    got = torch.nn.functional.cross_entropy(logits, torch.arange(4)).item()
    want = mnrl_reference(q.numpy(), torch.cat([p, n]).numpy(), 20.0, skip)
    assert got == pytest.approx(want, rel=1e-9)


def test_collate_masks_passages_that_also_answer_the_query(tiny_encoder: Path) -> None:
    tok = read_checkpoint(tiny_encoder).tokenizer
    rows = [
        Pair("我们", ["经济"], ["文化"]),  # row 0: negative 文化
        Pair("老师", ["经济", "城市"]),  # rows 1, 2: 经济 also answers row 0's query? no
        Pair("学生", ["文化"]),  # row 3: its positive is row 0's hard negative
    ]
    enc = encode_pairs(tok, rows, 16, "", "")
    assert enc.group.tolist() == [0, 1, 1, 2]
    task = collator(enc, symmetric=True)
    b = task.collate(np.arange(4))
    # candidates: positives 经济, 经济, 城市, 文化, then row 0's negative 文化
    assert b["mask"].tolist() == [
        [False, True, False, False, False],  # 我们: the second 经济 answers it too
        [True, False, True, False, False],  # 老师 (经济): 经济 and 城市 are both its answers
        [True, True, False, False, False],  # 老师 (城市)
        [False, False, False, False, True],  # 学生: the negative 文化 is its answer
    ]
    # passage -> query: 经济 answers 我们 and 老师, 城市 only 老师, 文化 only 学生
    assert b["mask_t"].tolist() == [
        [False, True, True, False],
        [True, False, True, False],
        [False, True, False, False],
        [False, False, False, False],
    ]


def test_paraphrases_are_read_as_queries_and_never_negatives(tiny_encoder: Path) -> None:
    from llmos.inference.classify import encode_texts

    tok = read_checkpoint(tiny_encoder).tokenizer
    rows = [Pair("老师", ["经济"], paraphrases=["经济"]), Pair("学生", ["经济"])]
    enc = encode_pairs(tok, rows, 16, "我们", "他")  # query prefix 我们, passage prefix 他
    want = encode_texts(tok, ["我们老师", "我们老师", "我们学生"], None, 16)[0]
    assert [x.tolist() for x in enc.queries] == [x.tolist() for x in want]
    want = encode_texts(tok, ["他经济", "我们经济", "他经济"], None, 16)[0]
    assert [x.tolist() for x in enc.positives] == [x.tolist() for x in want]
    # the same text read two ways is two candidates; 老师 has both, 学生 only the passage
    a, b, c = enc.positive_key.tolist()
    assert a == c != b and enc.answers == [frozenset({a, b}), frozenset({a})]
    task = collator(enc, symmetric=False)
    assert task.collate(np.arange(3))["mask"].tolist() == [
        [False, True, True],
        [True, False, True],
        [True, False, False],  # 学生: the passage 经济 is its answer (a copy), the query not
    ]


def test_rows_of_one_label_are_never_each_others_negatives(tiny_encoder: Path) -> None:
    tok = read_checkpoint(tiny_encoder).tokenizer
    rows = [
        Pair("我们", [], paraphrases=["我们喜欢"], label="like"),
        Pair("老师", [], paraphrases=["老师喜欢"], label="like"),
        Pair("学生", [], paraphrases=["学生讨论"], label="talk"),
        Pair("公司", [], paraphrases=["公司研究"]),  # no label: only its own text is masked
    ]
    enc = encode_pairs(tok, rows, 16, "", "")
    assert enc.label.tolist() == [0, 0, 1, -1]
    task = collator(enc, symmetric=True)
    b = task.collate(np.arange(4))
    want = [
        [False, True, False, False],
        [True, False, False, False],
        [False, False, False, False],
        [False, False, False, False],
    ]
    assert b["mask"].tolist() == want and b["mask_t"].tolist() == want


def test_read_pairs_shapes_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"query": "q1", "positive": "a"}\n'
        '{"question": "q2", "answers": ["b", "b", "c"], "category": "x"}\n'
        '{"query": "q3", "positive": ["d"], "negative": "e"}\n'
        '{"query": "q4", "paraphrase": "f", "label": "x"}\n',
        "utf-8",
    )
    rows = read_pairs(f).rows
    assert [r.label for r in rows] == [None, None, None, "x"]
    assert [(r.query, r.positives, r.negatives, r.paraphrases) for r in rows] == [
        ("q1", ["a"], [], []),
        ("q2", ["b", "c"], [], []),
        ("q3", ["d"], ["e"], []),
        ("q4", [], [], ["f"]),
    ]
    f.write_text('{"query": "q1", "positive": "a"}\n{"query": "q2", "positive": [""]}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: 'positive' must be a non-empty string"):
        read_pairs(f)
    assert len(read_pairs(f, skip_bad_rows=True).rows) == 1
    f.write_text('{"query": "q1", "positive": "a", "negative": 3}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: 'negative' must be"):
        read_pairs(f)
    f.write_text('{"query": "q1", "positive": "a", "label": 3}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: 'label' must be a non-empty string"):
        read_pairs(f)
    f.write_text('{"query": "q1", "negative": "a"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: needs 'positive' \(or 'paraphrase'\)"):
        read_pairs(f)


def test_retrieval_metrics_known_values() -> None:
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.2, 0.9], [0.3, 0.2, 0.1]])
    # query 0: first; query 1: doc 1 ties doc 0 and loses the tie (rank 3); query 2: none
    m = retrieval_metrics(scores, [{0}, {1}, set()])
    assert m == pytest.approx(
        {"mrr": (1 + 1 / 3) / 3, "acc@1": 1 / 3, "acc@5": 2 / 3, "acc@10": 2 / 3}
    )


def test_config_errors(encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="micro_batch_size: task: embedding"):
        load_config(
            FinetuneConfig,
            None,
            ["task=embedding", "train.batch_size=32", "train.micro_batch_size=8"],
        )
    with pytest.raises(ConfigError, match=r"contrastive\.scale must be > 0"):
        load_config(FinetuneConfig, None, ["task=embedding", "contrastive.scale=0"])
    assert load_config(FinetuneConfig, None, ["task=embedding"]).select == "mrr"
    one = tmp_path / "one"
    one.mkdir()
    (one / "train.jsonl").write_text('{"query": "我们", "positive": "经济"}\n', "utf-8")
    (one / "valid.jsonl").write_text('{"query": "我们", "positive": "经济"}\n', "utf-8")
    with pytest.raises(DataError, match="at least two pairs"):
        finetune(load_config(FinetuneConfig, None, args(encoder, one, tmp_path, "one")))
