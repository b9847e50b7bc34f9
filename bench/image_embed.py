"""Image-embedding throughput: llmos's ViT against Hugging Face ``ViTModel`` on the same weights
and the same images, then end to end from PNG bytes.

    python bench/image_embed.py --checkpoint runs/clip-emoji/checkpoint --threads 2

The CLIP checkpoint's image tower is exported to ``transformers.ViTModel`` with
``llmos.checkpoint.hf_vit.vit_to_hf`` (no pooler, as the checkpoint; HF's SDPA attention, as
llmos's). The images are the first ``--images`` emoji of the prepared ``--style`` (real
pictures, ``llmos data prepare --with-emoji``), composited and resized as training read them.
Both sides' last hidden states are compared (max abs difference) before anything is timed.

1. The towers alone, on the same normalised pixel tensor, at batch sizes 1, 32 and 256
   (``--batch-sizes``): images per second, each side timed in turns (a warm-up pass, then
   the median of ``--repeats`` rounds: ``llmos.compress.timing.compare_speed``).
2. End to end from PNG bytes, batch 32: llmos's ``ImagePipeline.embed_images`` (Pillow decode,
   composite on white, antialiased resize, the ViT and the projection) against Pillow decode +
   HF's ``ViTImageProcessorPil`` + ``ViTModel``. HF's processor is not the same preprocessing
   (it drops the alpha channel, so transparent pixels turn black, and resizes with Pillow), so
   only the speed compares there, and llmos's decode share is printed on its own.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

import llmos
from llmos.checkpoint.hf_vit import vit_to_hf
from llmos.compress.timing import compare_speed
from llmos.data.emoji import load_images
from llmos.data.emoji_pairs import normalise, to_pixels


def hf_vit(cfg, state: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """``transformers.ViTModel`` with the llmos ViT's config and weights."""
    import transformers

    hf_cfg = transformers.ViTConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_channels=cfg.num_channels,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf_cfg._attn_implementation = "sdpa"
    model = transformers.ViTModel(hf_cfg, add_pooling_layer=cfg.pooler)
    model.load_state_dict(vit_to_hf(state), strict=True)
    return model.eval()


def batched(fn, x: torch.Tensor, batch: int) -> None:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            fn(x[i : i + batch])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="runs/clip-emoji/checkpoint")
    ap.add_argument("--style", default="twitter")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    import transformers

    pipe = llmos.load(args.checkpoint)
    ours = pipe.model.vision
    cfg = ours.cfg
    hf = hf_vit(cfg, ours.state_dict())
    rgba = load_images(None, args.style)[1][: args.images]
    pixels = normalise(to_pixels(rgba, cfg.image_size))  # (N, 3, S, S) in [-1, 1]
    n = len(pixels)

    with torch.inference_mode():
        a, b = ours(pixels[:64]).hidden, hf(pixel_values=pixels[:64]).last_hidden_state
    print(
        f"{machine()}, {args.threads} threads, torch {torch.__version__}, transformers "
        f"{transformers.__version__}"
    )
    print(
        f"ViT {cfg.num_layers} layers x {cfg.hidden_size}, {cfg.image_size} px / {cfg.patch_size} "
        f"px patches ({1 + cfg.num_patches} tokens); {n} {args.style} emoji; hidden states max abs "
        f"diff llmos vs HF: {(a - b).abs().max().item():.2e} (of values up to "
        f"{b.abs().max().item():.1f})"
    )
    print(f"\n{'batch':>6} {'llmos img/s':>12} {'HF img/s':>10} {'llmos / HF':>11}")
    for bs in args.batch_sizes:
        sec = compare_speed(
            {
                "hf": lambda bs=bs: batched(lambda x: hf(pixel_values=x), pixels, bs),
                "llmos": lambda bs=bs: batched(ours, pixels, bs),
            },
            rounds=args.repeats,
        ).seconds
        print(
            f"{bs:>6} {n / sec['llmos']:>12,.0f} {n / sec['hf']:>10,.0f} "
            f"{sec['hf'] / sec['llmos']:>10.2f}x"
        )

    # End to end from PNG bytes, batch 32.
    pngs = []
    for x in rgba:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, "PNG")
        pngs.append(buf.getvalue())
    processor = transformers.ViTImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )

    def hf_e2e() -> None:
        with torch.inference_mode():
            for i in range(0, n, 32):
                ims = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs[i : i + 32]]
                x = processor(images=ims, return_tensors="pt")["pixel_values"]
                hf(pixel_values=x)

    def llmos_e2e() -> None:
        pipe.embed_images(pngs, batch_size=32)

    t0 = time.perf_counter()
    decoded = pipe.decode(pngs)
    t_decode = time.perf_counter() - t0
    assert torch.equal(decoded, to_pixels(rgba, cfg.image_size))  # the training pixels
    sec = compare_speed({"hf": hf_e2e, "llmos": llmos_e2e}, rounds=args.repeats).seconds
    print(
        f"\nend to end from PNG bytes, batch 32: llmos {n / sec['llmos']:,.0f} img/s (decode "
        f"alone {n / t_decode:,.0f} img/s, pixels equal to training's), HF (Pillow + "
        f"ViTImageProcessorPil + ViTModel) {n / sec['hf']:,.0f} img/s: "
        f"{sec['hf'] / sec['llmos']:.2f}x"
    )


if __name__ == "__main__":
    main()
