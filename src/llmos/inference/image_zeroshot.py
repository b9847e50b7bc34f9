"""Zero-shot image classification from label descriptions over a CLIP pipeline's vectors."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmos.errors import LlmosError
from llmos.inference.classify import label_result
from llmos.inference.zeroshot import softmax, unit_rows

if TYPE_CHECKING:
    from llmos.inference.image import ImagePipeline
    from llmos.inference.image_decode import ImageInput


def label_descriptions(labels: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    """Each label's descriptions as a list of non-empty strings, two labels at least.

    Raises:
        LlmosError: naming the label that is not a non-empty string, or has no description.
    """
    if not isinstance(labels, Mapping):
        raise LlmosError("labels map each label to its description(s): {'cat': 'a cat', ...}")
    out = {}
    for name, value in labels.items():
        if not isinstance(name, str) or not name.strip():
            raise LlmosError(f"labels must be non-empty strings, got {name!r}")
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence) or not all(isinstance(t, str) for t in items):
            raise LlmosError(f"label {name!r}: expected a string or a list of strings")
        texts = [t.strip() for t in items]
        if not texts or not all(texts):
            raise LlmosError(f"label {name!r} has an empty description or none")
        out[name] = texts
    if len(out) < 2:
        raise LlmosError(f"need at least two labels, got {list(out) or 'none'}")
    return out


class ImageZeroShot:
    """Zero-shot image classification from label descriptions, in any language the text
    tower reads: each label is the normalised mean of its descriptions' vectors in the image
    space (as :mod:`llmos.inference.zeroshot` averages a label's descriptions), and an image's
    label probabilities are a softmax of the model's logit scale times its cosines with them:
    the probabilities training's image -> text loss gives (the scale is clamped at
    ``logit_scale_max`` there too).

    Args:
        pipe: the CLIP pipeline.
        labels: each label's description(s): ``{"cat": ["猫", "a cat"], "dog": "狗"}``.

    Raises:
        LlmosError: fewer than two labels, a label without descriptions, or a non-string.
    """

    def __init__(self, pipe: ImagePipeline, labels: Mapping[str, str | Sequence[str]]) -> None:
        descriptions = label_descriptions(labels)
        self.pipe, self.labels = pipe, tuple(descriptions)
        vectors = pipe.embed_texts([t for ts in descriptions.values() for t in ts])
        starts = np.cumsum([0, *(len(ts) for ts in descriptions.values())])
        means = np.stack([vectors[a:b].mean(0) for a, b in itertools.pairwise(starts)])
        self.prototypes = unit_rows(means)  # (k, D)
        self.scale = pipe.logit_scale

    def probabilities(self, image_vectors: np.ndarray) -> np.ndarray:
        """(n, k) label probabilities of (n, D) image vectors, columns in label order."""
        cosines = unit_rows(image_vectors).astype(np.float64) @ self.prototypes.T
        return softmax(self.scale * cosines)

    def classify(self, images: Sequence[ImageInput], batch_size: int = 32) -> list[dict[str, Any]]:
        """``[{"label", "score", "scores": {label: probability}}, ...]`` in input order, the
        shape of a trained classifier's (and the text zero-shot classifier's) results.

        Raises:
            ImageError: an input that is not a usable image (naming it).
        """
        if not len(images):
            return []
        probs = self.probabilities(self.pipe.embed_images(images, batch_size=batch_size))
        return [label_result(self.labels, row) for row in probs.tolist()]
