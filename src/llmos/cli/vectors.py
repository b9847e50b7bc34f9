"""Vectors and search: ``embed`` (sentence embeddings of texts, or a CLIP checkpoint's image
vectors with ``--image``), ``index build`` and ``search`` (a text index), and CLIP's
``search-images`` (text -> image) and ``describe-images`` (image -> text)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from llmos.cli.flags import Subcommands
from llmos.errors import LlmosError


def add_embed(sub: Subcommands) -> None:
    """``llmos embed``."""
    em = sub.add_parser(
        "embed",
        help="sentence embeddings of texts, or a CLIP checkpoint's image vectors -> a .npy matrix",
    )
    em.add_argument(
        "checkpoint",
        help="encoder checkpoint directory (e.g. an imported MiniLM), or a CLIP checkpoint",
    )
    src = em.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="text file (one text a line), .tsv/.csv/.jsonl, or -")
    src.add_argument(
        "--image",
        nargs="+",
        metavar="FILE",
        help="CLIP: image files (PNG, JPEG, WebP, GIF, BMP), directories or glob patterns",
    )
    em.add_argument(
        "--output", required=True, help="the .npy file to write (row i = text or image i)"
    )
    em.add_argument("--text-encoder", help="CLIP: its text tower, if not where config.json says")
    em.add_argument(
        "--pooling", choices=["mean", "cls", "max"], help="default: the checkpoint's, else mean"
    )
    em.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="unit-length vectors (default: the checkpoint's, else yes)",
    )
    em.add_argument(
        "--kind",
        choices=["query", "passage"],
        help="put the checkpoint's query or passage prefix before each text (E5: 'query: ', "
        "'passage: '); no effect on a model without prefixes",
    )
    em.add_argument("--batch-size", type=int, default=32)
    em.set_defaults(func=_embed)


def add_index(sub: Subcommands) -> None:
    """``llmos index build``."""
    ix = sub.add_parser("index", help="vector indexes for semantic search").add_subparsers(
        dest="action", required=True
    )
    ib = ix.add_parser("build", help="embed a corpus into a saved FAISS index")
    ib.add_argument("checkpoint", help="encoder checkpoint (e.g. an imported MiniLM)")
    ib.add_argument(
        "--corpus", required=True, help='text file (one document a line) or JSONL {"id", "text"}'
    )
    ib.add_argument("--out", required=True, help="index directory to write")
    ib.add_argument("--text-key", default="text")
    ib.add_argument("--id-key", default="id")
    ib.add_argument("--batch-size", type=int, default=32)
    ib.set_defaults(func=_index_build)


def add_search(sub: Subcommands) -> None:
    """``llmos search``."""
    se = sub.add_parser(
        "search", help="nearest documents of an index (rebuilt first if its corpus changed)"
    )
    se.add_argument("index", help="index directory made by `llmos index build`")
    se.add_argument("queries", nargs="+", metavar="QUERY")
    se.add_argument("--k", type=int, default=5)
    se.add_argument("--json", action="store_true", help="one JSON object per query")
    se.set_defaults(func=_search)


def add_search_images(sub: Subcommands) -> None:
    """``llmos search-images``."""
    si = sub.add_parser(
        "search-images",
        help="text -> image with a CLIP checkpoint: the images nearest each query",
        description="Queries in any language the CLIP checkpoint's text tower reads. The "
        "images searched are the prepared emoji of one style (llmos data prepare "
        "--with-emoji; default the style the checkpoint never trained on), or --gallery.",
    )
    si.add_argument("checkpoint", help="CLIP checkpoint directory (runs/clip-emoji/checkpoint)")
    si.add_argument("queries", nargs="+", metavar="QUERY")
    si.add_argument("--k", type=int, default=5, help="images per query")
    si.add_argument("--style", help="the emoji style searched (apple, google, twitter, facebook)")
    si.add_argument(
        "--gallery", nargs="+", default=[], metavar="FILE", help="search these images instead"
    )
    si.add_argument("--text-encoder", help="the CLIP checkpoint's text tower, if moved")
    si.add_argument("--json", action="store_true", help="one JSON object per query")
    si.set_defaults(func=_search_images)


def add_describe_images(sub: Subcommands) -> None:
    """``llmos describe-images``."""
    di = sub.add_parser(
        "describe-images",
        help="image -> text with a CLIP checkpoint: the captions nearest each image",
        description="The captions are every emoji's name, in Chinese and English (llmos data "
        "prepare --with-emoji), or the texts of --captions. --by drawings ranks the emoji "
        "names by the image's nearest drawing of each emoji in the styles the checkpoint "
        "trained on; --by both adds that cosine to the caption's.",
    )
    di.add_argument("checkpoint", help="CLIP checkpoint directory (runs/clip-emoji/checkpoint)")
    di.add_argument(
        "images", nargs="+", metavar="FILE", help="image files, directories or glob patterns"
    )
    di.add_argument("--k", type=int, default=5, help="captions per image")
    di.add_argument("--lang", choices=["zh", "en"], help="emoji names in one language only")
    di.add_argument("--captions", help="texts to choose from: one a line, or .tsv/.csv/.jsonl")
    di.add_argument(
        "--by",
        choices=["captions", "drawings", "both"],
        default="captions",
        help="rank by caption cosine, look-alike training drawings, or both (summed); "
        "drawings need the emoji names, not --captions (default: captions)",
    )
    di.add_argument(
        "--zooms",
        metavar="F,F,...",
        help="describe each image by the mean of its views scaled by these factors, e.g. "
        "0.9,1,1.1 (one pass of the image tower per view; default: the image as it is)",
    )
    di.add_argument("--text-encoder", help="the CLIP checkpoint's text tower, if moved")
    di.add_argument("--batch-size", type=int, default=32)
    di.add_argument("--json", action="store_true", help="one JSON object per image")
    di.set_defaults(func=_describe_images)


def _zooms(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(z) for z in value.split(",")]
    except ValueError:
        raise LlmosError(
            f"--zooms: expected scale factors separated by commas, e.g. 0.9,1,1.1; got {value!r}"
        ) from None


def _embed(args: argparse.Namespace) -> int:
    if args.image:
        from llmos.recipes.images import embed_image_files

        if args.pooling or args.normalize is not None or args.kind:
            raise LlmosError("--pooling, --normalize and --kind are for texts, not --image")
        n, d = embed_image_files(
            args.checkpoint,
            args.image,
            args.output,
            batch_size=args.batch_size,
            text_encoder=args.text_encoder,
        )
        print(f"{n} image embeddings of size {d} written to {args.output}")
        return 0
    from llmos.recipes.predict import embed_file

    n, d = embed_file(
        args.checkpoint,
        args.input,
        args.output,
        pooling=args.pooling,
        normalize=args.normalize,
        kind=args.kind,
        batch_size=args.batch_size,
        text_encoder=args.text_encoder,
    )
    print(f"{n} embeddings of size {d} written to {args.output}")
    return 0


def _index_build(args: argparse.Namespace) -> int:
    from llmos.recipes.search import build_index

    index = build_index(
        args.checkpoint,
        args.corpus,
        args.out,
        text_key=args.text_key,
        id_key=args.id_key,
        batch_size=args.batch_size,
    )
    print(f"{len(index.ids)} documents indexed in {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from llmos.recipes.search import search

    for query, hits in zip(args.queries, search(args.index, args.queries, args.k), strict=True):
        if args.json:
            print(json.dumps({"query": query, "hits": hits}, ensure_ascii=False))
            continue
        print(query)
        for h in hits:
            print(f"  {h['score']:.3f}  [{h['id']}] {h['text']}")
    return 0


def _hit_line(h: dict[str, Any]) -> str:
    """One search hit: an emoji with its names, else a text, else a file."""
    if "emoji" in h and "text" not in h:
        names = h["name"] + (f" ({h['zh_name']})" if h.get("zh_name") else "")
        return f"{h['score']:.3f}  {h['emoji']}  {names}  [{h['style']} #{h['index']}]"
    if "emoji" in h:
        parts = ""  # by both: what the score adds up
        if "caption_score" in h:
            parts = f"  (caption {h['caption_score']:.3f} + drawing {h['drawing_score']:.3f})"
        return f"{h['score']:.3f}  {h['emoji']}  {h['text']}{parts}"
    return f"{h['score']:.3f}  {h.get('text') or h.get('name') or h['index']}"


def _print_hits(results: list[dict[str, Any]], title: str, hits: str, as_json: bool) -> int:
    """Each result as a JSON line, or its ``title`` then one indented line per hit."""
    for r in results:
        if as_json:
            print(json.dumps(r, ensure_ascii=False))
            continue
        print(r[title])
        for h in r[hits]:
            print(f"  {_hit_line(h)}")
    return 0


def _search_images(args: argparse.Namespace) -> int:
    from llmos.recipes.images import search_images

    results = search_images(
        args.checkpoint,
        args.queries,
        k=args.k,
        style=args.style,
        gallery=args.gallery,
        text_encoder=args.text_encoder,
    )
    return _print_hits(results, "query", "images", args.json)


def _describe_images(args: argparse.Namespace) -> int:
    from llmos.recipes.images import describe_images

    results = describe_images(
        args.checkpoint,
        args.images,
        k=args.k,
        lang=args.lang,
        captions_path=args.captions,
        by=args.by,
        batch_size=args.batch_size,
        text_encoder=args.text_encoder,
        zooms=_zooms(args.zooms),
    )
    return _print_hits(results, "image", "captions", args.json)
