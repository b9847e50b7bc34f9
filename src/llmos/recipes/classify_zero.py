"""``llmos classify-zero``: classify texts with labels given by descriptions (zero-shot) or by a
file of a few examples per label (few-shot), over an encoder's sentence vectors, by cloze
patterns on a masked LM (``--method cloze --pattern ... --labels NAME=VERBALIZER``), or by
asking an instruction-tuned GPT (``--method instruct --instruction ... --labels NAME=ANSWER``)
(:class:`~llmos.inference.zeroshot.ZeroShotClassifier`); or images, with a CLIP checkpoint
and label descriptions in any language its text tower reads (``--image FILE ...``:
:class:`~llmos.inference.image_zeroshot.ImageZeroShot`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmos.data.readers import read_classification
from llmos.data.textfiles import read_inputs
from llmos.errors import DataError, LlmosError
from llmos.inference.cloze import TEXT_SLOT
from llmos.inference.image import ImagePipeline
from llmos.inference.image_decode import image_files
from llmos.inference.load import load_pipeline
from llmos.inference.zeroshot import METHODS, ZeroShotClassifier


def parse_labels(
    items: Sequence[str],
    flag: str = "--labels",
    misplaced: str | None = "put the texts to classify before --labels, or in a file with --input",
) -> dict[str, list[str]]:
    """``["positive=a positive review", "positive=great", "negative=..."]`` -> ``{label:
    [descriptions]}``; a label given twice gets both descriptions. (A label known only from
    the examples file needs no item.) ``flag`` names the option in errors; ``misplaced`` is
    the hint for an item without ``=`` (argparse gives an option every value up to the next
    one, so for classify-zero that is a text to classify written after them)."""
    labels: dict[str, list[str]] = {}
    for item in items:
        name, sep, description = item.partition("=")
        name, description = name.strip(), description.strip()
        if not sep:
            hint = f"; {misplaced}" if misplaced else ", e.g. pos=正面评价"
            raise LlmosError(f"{flag} {item!r}: expected NAME=DESCRIPTION{hint}")
        if not name or not description:
            raise LlmosError(
                f"{flag} {item!r}: expected NAME=DESCRIPTION, with a name and a description"
            )
        labels.setdefault(name, []).append(description)
    return labels


def read_examples(
    path: str | Path, label_key: str = "label", skip_bad_rows: bool = False
) -> dict[str, list[str]]:
    """``{label: [texts]}`` from a labelled file (JSONL ``{"text", "label"}``, or .tsv/.csv
    with those columns), labels in order of first appearance. A malformed row is a
    :class:`~llmos.errors.DataError` naming the file, line and field (skipped with
    ``skip_bad_rows``)."""
    examples: dict[str, list[str]] = {}
    read = read_classification(path, label_key=label_key, skip_bad_rows=skip_bad_rows)
    for row in read.rows:
        if row.text_b is not None:
            raise DataError(f"{path}: sentence pairs (text_b) are not supported as examples")
        examples.setdefault(row.label, []).append(row.text)
    return examples


def classify_zero(
    checkpoint: str | Path,
    labels: Sequence[str] = (),
    texts: Sequence[str] = (),
    *,
    input_path: str | None = None,
    examples_path: str | None = None,
    unlabelled_path: str | None = None,
    label_key: str = "label",
    skip_bad_rows: bool = False,
    method: str | None = None,
    temperature: float | None = None,
    batch_size: int = 32,
    patterns: Sequence[str] = (),
    instruction: str | None = None,
    images: Sequence[str] = (),
    text_encoder: str | None = None,
) -> list[dict[str, Any]]:
    """Classify ``texts`` (or every text of ``input_path``) into the labels of ``labels``
    (``NAME=DESCRIPTION`` items; ``NAME=VERBALIZER`` for ``cloze``, with ``patterns``;
    ``NAME=ANSWER`` for ``instruct``, with ``instruction``) and of the examples file;
    ``unlabelled_path``'s texts, when given, remove each label's prior
    (``ZeroShotClassifier(unlabelled=...)``). ``temperature`` None: the method's.

    ``images`` (files, directories, glob patterns) classifies images instead, with a CLIP
    checkpoint (``text_encoder`` overriding its text tower) and ``labels`` only.

    Returns:
        ``[{"text", "label", "score", "scores"}, ...]`` in input order (``"image"``, its
        path, in place of ``"text"`` for images).
    """
    if images:
        text_options = {
            "TEXTs": bool(texts),
            "--input": bool(input_path),
            "--examples": bool(examples_path),
            "--unlabelled": bool(unlabelled_path),
            "--method": method not in (None, "similarity"),
            "--temperature": temperature is not None,
            "--pattern": bool(patterns),
            "--instruction": instruction is not None,
        }
        given = [name for name, used in text_options.items() if used]
        return _classify_images(checkpoint, labels, images, given, text_encoder, batch_size)
    if text_encoder is not None:
        raise LlmosError("--text-encoder is for a CLIP checkpoint's --image classification")
    if method is not None and method not in METHODS:  # before the model loads
        raise LlmosError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if bool(patterns) != (method == "cloze"):
        raise LlmosError(
            "--method cloze needs --pattern, e.g. --pattern '{text} All in all, it was [MASK].'"
            if method == "cloze"
            else "--pattern is for --method cloze"
        )
    if (instruction is not None) != (method == "instruct"):
        raise LlmosError(
            "--method instruct needs --instruction, e.g. --instruction "
            "'判断下面这条评论的情感是正面还是负面。'"
            if method == "instruct"
            else "--instruction is for --method instruct"
        )
    for pattern in patterns:
        if pattern.count(TEXT_SLOT) != 1:
            raise LlmosError(
                f"--pattern {pattern!r}: put {TEXT_SLOT} (where the text goes) in it exactly once"
            )
    if bool(texts) == bool(input_path):
        raise LlmosError("give the texts to classify as arguments or with --input FILE (one)")
    names = parse_labels(labels)
    examples = read_examples(examples_path, label_key, skip_bad_rows) if examples_path else None
    if not names and not examples:
        raise LlmosError(
            "no labels: give --labels NAME=DESCRIPTION ... (zero-shot) or --examples FILE"
        )
    if input_path:
        texts, _ = read_inputs(input_path)
        if not texts:
            raise DataError(f"{input_path}: no texts")
    pool = None
    if unlabelled_path:
        pool, _ = read_inputs(unlabelled_path)
        if not pool:
            raise DataError(f"{unlabelled_path}: no texts")
    pipe = load_pipeline(checkpoint)
    clf = ZeroShotClassifier(
        pipe,
        names,
        examples,
        method=method,
        temperature=temperature,
        batch_size=batch_size,
        unlabelled=pool,
        patterns=list(patterns) if patterns else None,
        instruction=instruction,
    )
    results = clf.classify(list(texts))
    return [{"text": t, **r} for t, r in zip(texts, results, strict=True)]


def _classify_images(
    checkpoint: str | Path,
    labels: Sequence[str],
    images: Sequence[str],
    text_options: list[str],
    text_encoder: str | None,
    batch_size: int,
) -> list[dict[str, Any]]:
    """``classify_zero`` for images: label descriptions only (``text_options`` names the
    options given that are for texts), against a CLIP checkpoint."""
    if text_options:
        verb = "is" if len(text_options) == 1 else "are"
        raise LlmosError(
            "--image classifies images by label descriptions (--labels NAME=TEXT); "
            f"{', '.join(text_options)} {verb} for texts"
        )
    names = parse_labels(labels)
    if not names:
        raise LlmosError("no labels: give --labels NAME=DESCRIPTION ... (in any language)")
    files = image_files(images)  # before the model loads: a typo fails at once
    pipe = load_pipeline(checkpoint, text_encoder=text_encoder)
    if not isinstance(pipe, ImagePipeline):
        raise LlmosError(f"{checkpoint} is {pipe.describe()}: --image needs a CLIP checkpoint")
    results = pipe.classify_images(files, names, batch_size=batch_size)
    return [{"image": str(f), **r} for f, r in zip(files, results, strict=True)]
