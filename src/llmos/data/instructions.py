"""Instruction-tuning sets built from the prepared real data.

``tasks/instruct-{zh,en}/{train,valid,test}.jsonl`` hold ``{"instruction", "input", "output",
"source"}`` records from three sources:

- question answering: the chatterbot-corpus FAQ pairs (the question is the instruction, the
  first answer the output), split 80/10/10 by the question's salted hash;
- sentiment: reviews from the sentiment task with "is this positive or negative?" phrased as
  an instruction, answered with the label word;
- intent: requests from the intent task, answered with the intent name.

Each record keeps the split of the task it comes from, so no test text of a task is a training
instruction. Sizes are capped so that question answering stays a large share of the mix.
"""

from __future__ import annotations

from typing import Any

# What each language asks, and how it names the sentiment labels.
PHRASES: dict[str, dict[str, Any]] = {
    "zh": {
        "sentiment": "判断下面这条评论的情感是正面还是负面。",
        "labels": {"pos": "正面", "neg": "负面"},
        "intent": "下面这句话是什么意图?",
    },
    "en": {
        "sentiment": "Is the sentiment of this review positive or negative?",
        "labels": {"pos": "positive", "neg": "negative"},
        "intent": "What is the intent of this request?",
    },
}
# Records per split taken from each labelled task.
PER_TASK = {"train": 400, "valid": 40, "test": 60}
MAX_INPUT_CHARS = 160  # keep prompts well inside a small decoder's context window


def instruction_rows(
    lang: str,
    qa: list[dict[str, Any]],
    qa_split: dict[str, str],
    sentiment: dict[str, list[tuple[str, str]]],
    intents: dict[str, list[dict[str, Any]]],
) -> dict[str, list[dict[str, str]]]:
    """The instruction records of each split.

    Args:
        lang: ``zh`` or ``en``.
        qa: FAQ rows ``{"question", "answer", ...}``; ``qa_split`` maps a question to its split.
        sentiment: per split, ``(text, label)`` rows in their file order (already shuffled).
        intents: per split, ``{"text", "intent", ...}`` rows in their file order.
    """
    phrases = PHRASES[lang]
    out: dict[str, list[dict[str, str]]] = {s: [] for s in PER_TASK}
    for row in qa:
        out[qa_split[row["question"]]].append(
            {"instruction": row["question"], "input": "", "output": row["answer"], "source": "qa"}
        )
    for split, cap in PER_TASK.items():
        picked = [
            (t, label)
            for t, label in sentiment.get(split, [])
            if len(t) <= MAX_INPUT_CHARS and label in phrases["labels"]
        ][:cap]
        out[split] += [
            {
                "instruction": phrases["sentiment"],
                "input": t,
                "output": phrases["labels"][label],
                "source": "sentiment",
            }
            for t, label in picked
        ]
        # Every intent gets its turn before any gets a second example.
        by_intent: dict[str, list[dict[str, Any]]] = {}
        for r in intents.get(split, []):
            by_intent.setdefault(r["intent"], []).append(r)
        queues = [by_intent[k] for k in sorted(by_intent)]
        taken: list[dict[str, Any]] = []
        while len(taken) < cap and any(queues):
            for q in queues:
                if q and len(taken) < cap:
                    taken.append(q.pop(0))
        out[split] += [
            {
                "instruction": phrases["intent"],
                "input": r["text"],
                "output": r["intent"],
                "source": "intent",
            }
            for r in taken
        ]
    return out
