"""Chinese spelling correction scores: sentence level (SIGHAN) and character level.

A pair (source, target) has as many characters on both sides (a typo is a character replaced
by another), and so has each prediction. With E = sentences with errors (source != target),
C = sentences the system changed (prediction != source):

- sentence correction: a true positive is a sentence of E whose prediction equals the target;
  precision = TP / |C|, recall = TP / |E| (SIGHAN 2015's sentence-level correction, as in the
  ReaLiSe / MacBERT4CSC evaluations). ``sentence_*`` keys.
- sentence detection: a true positive is a sentence of E whose changed positions are exactly
  its wrong ones. ``sentence_detect_*``.
- character level, over all positions: detection counts a changed position that was wrong,
  correction one changed to the target's character; precision over changed positions, recall
  over wrong ones. ``char_detect_*`` and ``char_*``.
- ``fpr``: the share of clean sentences (source == target) that were changed.
- ``pycorrector_precision`` / ``pycorrector_f1``: pycorrector's ``eval_model_batch``
  (pycorrector/utils/evaluate_utils.py, v1.1.4) counts only changed *clean* sentences as false
  positives, so a wrong change to a sentence with errors lowers its recall, not its precision;
  given so that its published numbers can be compared. Its recall equals ``sentence_recall``.
"""

from __future__ import annotations

from collections.abc import Sequence


def _prf(tp: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1; 0 where a denominator is 0."""
    p = tp / predicted if predicted else 0.0
    r = tp / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def sentence_scores(
    sources: Sequence[str], predictions: Sequence[str], targets: Sequence[str]
) -> dict[str, float]:
    """Sentence- and character-level detection and correction scores (module docstring).

    Raises:
        ValueError: the three lists differ in length, or a sentence's source, prediction and
            target do (these metrics score substitutions only).
    """
    if not len(sources) == len(predictions) == len(targets):
        raise ValueError(
            f"{len(sources)} sources, {len(predictions)} predictions, {len(targets)} targets"
        )
    n = {"erroneous": 0, "changed": 0, "clean": 0, "clean_changed": 0, "sent_cor": 0}
    n |= {"sent_det": 0, "wrong": 0, "edited": 0, "char_det": 0, "char_cor": 0}
    for k, (src, pred, tgt) in enumerate(zip(sources, predictions, targets, strict=True)):
        if not len(src) == len(pred) == len(tgt):
            raise ValueError(
                f"sentence {k}: source, prediction and target have {len(src)}, {len(pred)} and "
                f"{len(tgt)} characters; spelling scores need substitutions only"
            )
        wrong = {i for i, (a, b) in enumerate(zip(src, tgt, strict=True)) if a != b}
        edited = {i for i, (a, b) in enumerate(zip(src, pred, strict=True)) if a != b}
        n["erroneous"] += bool(wrong)
        n["changed"] += bool(edited)
        n["clean"] += not wrong
        n["clean_changed"] += bool(edited) and not wrong
        n["sent_cor"] += bool(wrong) and pred == tgt
        n["sent_det"] += bool(wrong) and edited == wrong
        n["wrong"] += len(wrong)
        n["edited"] += len(edited)
        n["char_det"] += len(wrong & edited)
        n["char_cor"] += sum(pred[i] == tgt[i] for i in wrong & edited)
    out: dict[str, float] = {
        "sentences": len(sources),
        "with_errors": n["erroneous"],
        "changed": n["changed"],
    }
    for name, tp, predicted, gold in (
        ("sentence", n["sent_cor"], n["changed"], n["erroneous"]),
        ("sentence_detect", n["sent_det"], n["changed"], n["erroneous"]),
        ("char", n["char_cor"], n["edited"], n["wrong"]),
        ("char_detect", n["char_det"], n["edited"], n["wrong"]),
    ):
        p, r, f1 = _prf(tp, predicted, gold)
        out |= {f"{name}_precision": p, f"{name}_recall": r, f"{name}_f1": f1}
    p, r, f1 = _prf(n["sent_cor"], n["sent_cor"] + n["clean_changed"], n["erroneous"])
    out |= {"pycorrector_precision": p, "pycorrector_f1": f1}
    out["fpr"] = n["clean_changed"] / n["clean"] if n["clean"] else 0.0
    return out
