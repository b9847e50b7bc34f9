"""A CLIP-style image-text model over a frozen text tower (Radford et al. 2021,
https://arxiv.org/abs/2103.00020): a ViT encodes images, linear maps project image [CLS]
states and precomputed text vectors into one space, and a learned temperature scales their
cosine similarities. The text tower is not part of the module: its vectors come in as
tensors (text lives outside the model), so the checkpoint holds only what trains.

Module names follow HF ``CLIPModel`` (``visual_projection``, ``text_projection``,
``logit_scale``) for readers who know it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.model import CLIPConfig
from llmos.models.vision import ViTModel


@dataclass
class CLIPOutput:
    """What :class:`CLIPModel` returns.

    Attributes:
        image_embeds: (B, D) unit vectors of the images in the shared space.
        text_embeds: (M, D) unit vectors of the texts in the shared space.
        logits_per_image: (B, M) scaled cosines, ``scale * image_embeds @ text_embeds.T``.
        scale: the temperature's inverse, exp(logit_scale) clamped at ``logit_scale_max``.
    """

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    logits_per_image: torch.Tensor
    scale: torch.Tensor


class CLIPModel(nn.Module):
    """The trainable half of CLIP: the image encoder, both projections and the temperature."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = ViTModel(cfg.vision)
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text_dim, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        for proj in (self.visual_projection, self.text_projection):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, channels, H, W) normalised images -> (B, D) unit vectors."""
        cls = self.vision(pixel_values).cls  # (B, C)
        return F.normalize(self.visual_projection(cls), dim=-1)

    def embed_texts(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """(M, text_dim) frozen text-tower vectors -> (M, D) unit vectors."""
        return F.normalize(self.text_projection(text_vectors), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at ``logit_scale_max`` (CLIP clamps at 100)."""
        return self.logit_scale.exp().clamp(max=self.cfg.logit_scale_max)

    def forward(self, pixel_values: torch.Tensor, text_vectors: torch.Tensor) -> CLIPOutput:
        """Score every image against every text.

        Args:
            pixel_values: (B, channels, H, W) images, normalised as
                :func:`llmos.data.emoji_pairs.to_pixels` does.
            text_vectors: (M, text_dim) the frozen text tower's vectors.

        Returns:
            :class:`CLIPOutput` with (B, M) ``logits_per_image``.
        """
        img = self.embed_images(pixel_values)  # (B, D)
        txt = self.embed_texts(text_vectors)  # (M, D)
        scale = self.scale()
        return CLIPOutput(img, txt, scale * img @ txt.T, scale)
