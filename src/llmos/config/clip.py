"""What a contrastive image-text run reads (``llmos pretrain`` with ``model.model_type: clip``):
the emoji images and captions of ``llmos data prepare --with-emoji``, which styles train and
which one is kept for evaluation, and the concepts held out for zero-shot."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmos.errors import ConfigError

EMOJI_STYLES = ("apple", "google", "twitter", "facebook")
CAPTION_NEGATIVES = ("batch", "all")


@dataclass
class EmojiDataConfig:
    """The emoji image-caption pairs (``llmos.data.emoji_pairs``).

    ``home``: the data directory holding ``emoji/`` (null: ``$LLMOS_HOME/data``).
    ``train_styles`` are drawn from in training; ``eval_style`` never is (an unseen style).
    ``holdout``: the share of base emoji (a base with its skin-tone variants is one concept)
    kept out of training in every style, chosen with ``holdout_seed``, for zero-shot.
    ``zh_prob``: the chance a training caption is Chinese when the emoji has a Chinese name;
    ``keywords_prob``: the chance it is the keyword list rather than the name.
    ``max_shift``: images move by up to this many pixels each way (white fill), a random
    translation; no flips (an arrow flipped is another emoji). ``max_zoom``: each image is
    also scaled by a factor drawn from [1 - max_zoom, 1 + max_zoom] about its centre (white
    fill), since the styles draw their glyphs at different sizes in the frame.
    ``max_rotation``: and rotated by up to this many degrees either way (< 45: a quarter turn
    is another arrow). ``max_blur``: and blurred by a Gaussian of sigma drawn from
    [0, max_blur] pixels (<= 2), since styles differ in how sharp they draw.
    ``views``: 2 draws each training emoji in two different training styles (where it has
    two) and adds a symmetric InfoNCE between the two drawings, weighted by
    ``image_loss_weight``, beside each drawing's image-text loss: the same concept in another
    style is the positive, which is what an unseen style asks of the model.
    ``caption_negatives``: what an image's caption is told apart from. ``batch``: the other
    captions of its batch (CLIP's in-batch loss). ``all``: every caption of every trainable
    emoji (the cached vectors, projected anew each step; 11,622 on the default split), the
    way the evaluation ranks names; the other captions of the image's own emoji are left out
    of its negatives. Text -> image stays in-batch either way.
    """

    home: str | None = None
    train_styles: list[str] = field(default_factory=lambda: ["apple", "google", "facebook"])
    eval_style: str = "twitter"
    holdout: float = 0.1
    holdout_seed: int = 0
    zh_prob: float = 0.5
    keywords_prob: float = 0.3
    max_shift: int = 4
    max_zoom: float = 0.0
    views: int = 1
    image_loss_weight: float = 1.0
    caption_negatives: str = "batch"
    max_rotation: float = 0.0
    max_blur: float = 0.0

    def __post_init__(self) -> None:
        for style in [*self.train_styles, self.eval_style]:
            if style not in EMOJI_STYLES:
                raise ConfigError(f"emoji: unknown style {style!r}; choose from {EMOJI_STYLES}")
        if not self.train_styles or self.eval_style in self.train_styles:
            raise ConfigError(
                f"emoji.train_styles must be non-empty and leave out emoji.eval_style "
                f"({self.eval_style!r}), got {self.train_styles}"
            )
        for name in ("zh_prob", "keywords_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"emoji.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"emoji.holdout must be in [0, 1), got {self.holdout}")
        if self.max_shift < 0:
            raise ConfigError(f"emoji.max_shift must be >= 0, got {self.max_shift}")
        if not 0.0 <= self.max_zoom < 1.0:
            raise ConfigError(f"emoji.max_zoom must be in [0, 1), got {self.max_zoom}")
        if not 0.0 <= self.max_rotation < 45.0:
            raise ConfigError(
                f"emoji.max_rotation must be in [0, 45) degrees, got {self.max_rotation}"
            )
        if not 0.0 <= self.max_blur <= 2.0:
            raise ConfigError(f"emoji.max_blur must be in [0, 2] pixels, got {self.max_blur}")
        if self.views not in (1, 2):
            raise ConfigError(f"emoji.views must be 1 or 2, got {self.views}")
        if self.image_loss_weight < 0:
            raise ConfigError(f"emoji.image_loss_weight must be >= 0, got {self.image_loss_weight}")
        if self.caption_negatives not in CAPTION_NEGATIVES:
            raise ConfigError(
                f"emoji.caption_negatives must be one of {CAPTION_NEGATIVES}, "
                f"got {self.caption_negatives!r}"
            )
