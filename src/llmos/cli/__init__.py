"""``llmos`` command line: parse -> config -> call a recipe, the engine or the server. No logic.

One module per command group adds its subcommands and their handlers: :mod:`~llmos.cli.data`
(data, tokenizer), :mod:`~llmos.cli.train` (setup, pretrain, finetune), :mod:`~llmos.cli.infer`
(evaluate, predict, classify-zero, fill-mask, generate), :mod:`~llmos.cli.vectors` (embed,
index, search, search-images, describe-images),
:mod:`~llmos.cli.fewshot` (setfit, pet, self-train),
:mod:`~llmos.cli.compress` (convert, export, compress), :mod:`~llmos.cli.users`,
:mod:`~llmos.cli.support` (the customer-service app), :mod:`~llmos.cli.recommend` (the
recommendation app), :mod:`~llmos.cli.write` (the writing assistant),
:mod:`~llmos.cli.serve` and :mod:`~llmos.cli.jobs` (``llmos worker``). The flags of a command
with a config dataclass are generated from it (:mod:`~llmos.cli.flags`).

Every user mistake (a bad config key, a missing corpus, a corrupt checkpoint) is an
:class:`~llmos.errors.LlmosError`: printed as one line on stderr, exit status 2.
"""

from __future__ import annotations

import logging
import sys

from llmos import __version__
from llmos.cli import (
    compress,
    data,
    fewshot,
    infer,
    jobs,
    recommend,
    serve,
    support,
    train,
    users,
    vectors,
    write,
)
from llmos.cli.flags import CommandParser
from llmos.errors import LlmosError

# The commands, in the order `llmos --help` lists them.
COMMANDS = (
    data.add_data,
    data.add_tokenizer,
    train.add_setup,
    train.add_pretrain,
    train.add_finetune,
    infer.add_evaluate,
    infer.add_calibrate,
    infer.add_predict,
    infer.add_classify_zero,
    fewshot.add_setfit,
    fewshot.add_pet,
    fewshot.add_self_train,
    infer.add_fill_mask,
    infer.add_generate,
    compress.add_convert,
    vectors.add_embed,
    vectors.add_index,
    vectors.add_search,
    vectors.add_search_images,
    vectors.add_describe_images,
    compress.add_export,
    compress.add_compress,
    users.add_users,
    support.add_support,
    recommend.add_recommend,
    write.add_write,
    serve.add_serve,
    jobs.add_worker,
)


QUIET_LOGGERS = ("faiss",)


def build_parser() -> CommandParser:
    """The ``llmos`` parser: every command, each with ``func``, its handler, as a default."""
    p = CommandParser(prog="llmos", description="A language-model operating system.")
    p.add_argument("--version", action="version", version=f"llmos {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``llmos`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # libraries that log their own setup at INFO/DEBUG level
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except LlmosError as e:
        print(f"llmos: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
