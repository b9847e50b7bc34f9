"""Typed batch operations: equal operations are equal batch keys and different options are not;
each operation runs a whole batch as one pipeline call and hands every request its own slice."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from llmos.inference.generator import Completion
from llmos.serve.operations import (
    ClassifyOp,
    EmbedOp,
    FillMaskOp,
    GenerateOp,
    Prompt,
    Query,
    Runtime,
    SearchOp,
    StreamJob,
    StreamOp,
    TagOp,
    TextBatch,
    isolating,
    run_batch,
)
from llmos.store.vectors import DocumentIndex


class FakePipe:
    """A pipeline that records each call and answers from its inputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def classify(self, texts: list[str], texts_b: list[str] | None, **kw: Any) -> list[str]:
        self.calls.append(("classify", (texts, texts_b), kw))
        return [f"{a}|{b}" for a, b in zip(texts, texts_b or [None] * len(texts), strict=True)]

    def tag(self, texts: list[str], **kw: Any) -> list[int]:
        self.calls.append(("tag", texts, kw))
        return [len(t) for t in texts]

    def embed(self, texts: list[str], **kw: Any) -> np.ndarray:
        self.calls.append(("embed", texts, kw))
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    def fill_mask(self, text: str, top_k: int) -> str:
        self.calls.append(("fill_mask", text, {"top_k": top_k}))
        return text * top_k

    def complete(self, prompts: list[str], raw: bool, **options: Any) -> list[list[Completion]]:
        self.calls.append(("complete", prompts, {"raw": raw, **options}))
        return [[Completion(p.upper(), len(p), len(p), "stop")] for p in prompts]

    def stream_completion(self, prompt: str, raw: bool, **options: Any) -> Any:
        yield from prompt
        return Completion(prompt, 1, len(prompt), "stop")


def test_equal_options_are_equal_keys_and_different_options_are_not() -> None:
    assert EmbedOp("mean", True) == EmbedOp("mean", True)
    assert hash(EmbedOp("mean", True)) == hash(EmbedOp("mean", True))
    assert EmbedOp("mean", True) != EmbedOp("cls", True) != EmbedOp("cls", None)
    assert ClassifyOp(pairs=True) != ClassifyOp(pairs=False)
    assert ClassifyOp() == ClassifyOp(long_inputs="window") != ClassifyOp(long_inputs="truncate")
    assert FillMaskOp(3) != FillMaskOp(5) and TagOp() == TagOp()
    assert TagOp() != ClassifyOp()  # different kinds never mix, whatever their fields
    a = GenerateOp.of({"top_k": 5, "stop": ["。"], "strategy": "sample"}, raw=False)
    b = GenerateOp.of({"strategy": "sample", "stop": ["。"], "top_k": 5}, raw=False)
    assert a == b and hash(a) == hash(b)  # option order does not matter; lists become tuples
    assert a.kwargs == {"top_k": 5, "stop": ("。",), "strategy": "sample"}
    assert a != GenerateOp.of({"top_k": 5, "stop": ["。"], "strategy": "sample"}, raw=True)
    assert GenerateOp.of({}, solo=1) != GenerateOp.of({}, solo=2)  # a seeded sample runs alone
    assert StreamOp() != StreamOp()  # each stream is its own batch
    assert SearchOp("docs") == SearchOp("docs") != SearchOp("faq")


def test_a_batch_is_one_call_and_each_request_gets_its_slice() -> None:
    pipe = FakePipe()
    rt = Runtime(pipe)
    out = run_batch(rt, TagOp(), [TextBatch(["a", "bb"]), TextBatch(["ccc"])])
    assert out == [[1, 2], [3]]
    assert pipe.calls == [("tag", ["a", "bb", "ccc"], {"batch_size": 32})]

    out = ClassifyOp(pairs=True).run(
        rt, [TextBatch(["a"], ["x"]), TextBatch(["b", "c"], ["y", "z"])]
    )
    assert out == [["a|x"], ["b|y", "c|z"]]
    assert pipe.calls[-1][2] == {"batch_size": 32, "long_inputs": "window"}
    ClassifyOp(long_inputs="truncate").run(rt, [TextBatch(["a"])])
    assert pipe.calls[-1] == (
        "classify",
        (["a"], None),
        {"batch_size": 32, "long_inputs": "truncate"},
    )

    pipe.calls.clear()
    out = EmbedOp("cls", False, "passage").run(rt, [TextBatch(["a"]), TextBatch(["bb"])])
    assert out == [[[1.0, 1.0]], [[2.0, 1.0]]]
    assert pipe.calls[0][2] == {
        "pooling": "cls",
        "normalize": False,
        "kind": "passage",
        "batch_size": 32,
    }

    assert FillMaskOp(2).run(rt, ["ab", "c"]) == ["abab", "cc"]

    pipe.calls.clear()
    op = GenerateOp.of({"max_new_tokens": 4, "stop": ["x"]}, raw=True)
    assert op.run(rt, ["ab", "c"]) == ["AB", "C"]
    assert pipe.calls == [
        ("complete", ["ab", "c"], {"raw": True, "max_new_tokens": 4, "stop": ("x",)})
    ]
    detailed = op.run(rt, [Prompt("ab", details=True), "c"])  # the OpenAI surface's records
    assert detailed == [[Completion("AB", 2, 2, "stop")], "C"]


def test_search_embeds_the_queries_once_and_cuts_each_to_its_k() -> None:
    pipe = FakePipe()
    vectors = np.array([[1.0, 1.0], [3.0, 1.0], [9.0, 1.0]], dtype=np.float32)
    docs = [{"id": f"d{i}", "text": f"text {i}"} for i in range(3)]
    rt = Runtime(pipe, {"docs": DocumentIndex.build(vectors, docs, {})})
    hits = SearchOp("docs").run(rt, [Query("a", 1), Query("bbbbbbbbb", 3)])
    assert [len(h) for h in hits] == [1, 3]
    assert hits[0][0]["id"] == "d0" and hits[0][0]["text"] == "text 0"
    assert [h["id"] for h in hits[1]] == ["d2", "d1", "d0"]
    assert [(c[0], c[2]["kind"]) for c in pipe.calls] == [("embed", "query")]


def test_a_stream_emits_its_pieces_and_stops_when_cancelled() -> None:
    pieces: list[str] = []
    outcomes: list[str] = []
    job = StreamJob("abc", False, {}, pieces.append, outcomes.append)
    assert StreamOp().run(Runtime(FakePipe()), [job]) == [Completion("abc", 1, 3, "stop")]
    assert pieces == ["a", "b", "c"] and outcomes == ["done"]

    cancelled = threading.Event()
    pieces.clear()

    def emit(piece: str) -> None:
        pieces.append(piece)
        cancelled.set()  # the client hangs up after the first piece

    job = StreamJob("abc", False, {}, emit, outcomes.append, cancelled)
    assert StreamOp().run(Runtime(FakePipe()), [job]) == [None]  # no whole stream to report
    assert pieces == ["a"] and outcomes[-1] == "client_closed"


def test_isolating_runs_a_failed_batch_one_by_one() -> None:
    def run(op: object, payloads: list[int]) -> list[int]:
        if any(p < 0 for p in payloads):
            raise ValueError("negative")
        return [p * 10 for p in payloads]

    out = isolating(run)(TagOp(), [1, -1, 2])
    assert out[0] == 10 and out[2] == 20 and isinstance(out[1], ValueError)
