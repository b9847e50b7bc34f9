"""``llmos setup``, ``llmos pretrain`` and ``llmos finetune``: building and training models."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmos.cli.flags import Subcommands
from llmos.errors import ConfigError


def add_setup(sub: Subcommands) -> None:
    """``llmos setup``: the default model set."""
    su = sub.add_parser(
        "setup",
        help="build the default models that are missing (make run): multilingual-e5-small "
        "(trimmed) + Chinese sentiment/intent/NER, MiniLM + English intent, the MovieLens "
        "recommender, a sample of the writing assistant's material index, Chinese GPT",
        description="Build, step by step, the default model set into --models with the quick "
        "configs of --configs, and the writing assistant's shared material index into "
        "$LLMOS_HOME/apps/write/materials, where the server reads it (about 28 minutes on 2 "
        "CPU cores in all). The index is a sample, about 2 of those minutes: 2,500 of the "
        "shared corpus's 81,831 documents, spread evenly over it (`llmos write materials "
        "build` indexes all of it, in hours); with --background materials (make run) a job "
        "worker builds it while the demo is served. A step whose final output exists is "
        "skipped (a second run does nothing); an interrupted one resumes.",
    )
    su.add_argument(
        "--with",
        dest="with_steps",
        action="append",
        default=[],
        metavar="NAME",
        help="also build an optional model (repeatable): bert-zh, the Chinese BERT pretrained "
        "here from nothing (+ its WordPiece tokenizer; about 7 minutes)",
    )
    su.add_argument("--models", default="runs", help="models directory (default: runs)")
    su.add_argument(
        "--configs", default="configs/run", help="the quick configs (default: configs/run)"
    )
    su.add_argument(
        "--demo-user",
        metavar="NAME",
        help="then create the admin user NAME if missing, print a new API key for it, and "
        "queue the demo recommender's sequential model as NAME's background job",
    )
    su.add_argument(
        "--background",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a step to a background job of the --demo-user (repeatable; the step that "
        "can be: materials, the material index's sample, about 2 minutes), which a job worker "
        "(llmos serve --workers 1, or llmos worker) runs while the demo is served",
    )
    su.add_argument("--dry-run", action="store_true", help="print the plan only")
    su.set_defaults(func=_setup)


def add_pretrain(sub: Subcommands) -> None:
    """``llmos pretrain``: a YAML config plus dotted overrides (``PretrainConfig``)."""
    pt = sub.add_parser(
        "pretrain",
        help="pretrain a BERT encoder (MLM + NSP), a GPT decoder (causal LM), an XLNet "
        "(permutation LM) or a CLIP image encoder (contrastive, on emoji)",
    )
    pt.add_argument("--config", help="YAML config (configs/pretrain/*.yaml)")
    pt.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    pt.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=100 optim.lr=3e-4"
    )
    pt.set_defaults(func=_pretrain)


def add_finetune(sub: Subcommands) -> None:
    """``llmos finetune``: a YAML config plus dotted overrides (``FinetuneConfig``)."""
    ft = sub.add_parser(
        "finetune", help="fine-tune a classifier or tagger on an encoder, or instruction-tune a GPT"
    )
    ft.add_argument("--config", help="YAML config (configs/finetune/*.yaml)")
    ft.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    ft.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip and count malformed data rows instead of stopping (data.skip_bad_rows)",
    )
    ft.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. init=runs/bert-zh/checkpoint"
    )
    ft.set_defaults(func=_finetune)


def _setup(args: argparse.Namespace) -> int:
    from llmos.recipes.defaults import (
        MATERIAL_DOCS,
        Runners,
        check_background,
        demo_key,
        format_plan,
        format_summary,
        plan,
        run_setup,
        steps_with,
    )

    steps = steps_with(args.with_steps)
    background = check_background(args.background)
    if background and not args.demo_user:
        raise ConfigError(
            f"--background {background[0]} needs --demo-user NAME: the background job is the "
            "demo user's (or leave --background out to build every step now)"
        )
    planned = plan(args.models, args.configs, steps, background)
    print(format_plan(planned, args.models), flush=True)
    if args.dry_run:
        return 0
    from llmos.apps.recommend.demo import setup_movielens
    from llmos.apps.write.suggestions import setup_materials
    from llmos.recipes.convert import import_hf
    from llmos.recipes.finetune import finetune
    from llmos.recipes.pretrain import pretrain
    from llmos.recipes.trim_vocab import trim_vocab

    runners = Runners(
        import_hf=import_hf,
        pretrain=pretrain,
        finetune=finetune,
        trim_vocab=trim_vocab,
        recommend=setup_movielens,
        materials=setup_materials,
    )
    results = run_setup(args.models, args.configs, runners, steps, background)
    print(format_summary(results))
    if args.demo_user:
        key, url, created = demo_key(args.demo_user)
        what = "created admin user" if created else "new API key for user"
        print(f"{what} {args.demo_user!r} in {url}")
        print(f"API key: {key}")
        encoder = Path(args.models) / "e5-zh"
        if (encoder / "model.safetensors").is_file():  # the customer-service app's encoder
            from llmos.apps.support.demo import setup_demo

            for name, n in setup_demo(args.demo_user, encoder).items():
                print(f"demo knowledge base {name!r}: {n} FAQ pairs")
        outputs = {r.step.name: r.output for r in results}
        for r in results:
            if r.background:  # the materials step: the one that can be (check_background)
                from llmos.apps.write.materials_job import queue_materials

                job, what = queue_materials(
                    r.output, outputs[str(r.step.init)], args.demo_user, MATERIAL_DOCS
                )
                print(f"shared material index (a sample of {MATERIAL_DOCS} documents): {what}")
                if job is not None:
                    print(
                        "  a job worker builds it while the demo is served (llmos serve "
                        "--workers 1, as make run starts, or llmos worker): about 2 minutes on "
                        "2 cores"
                    )
        from llmos.apps.recommend.demo import queue_demo_sequential

        job, what = queue_demo_sequential(
            Path(args.models) / "movielens" / "checkpoint", args.demo_user
        )
        print(f"demo recommender's sequential model (SASRec): {what}")
        if job is not None:
            print(
                "  a job worker trains it while the demo is served (llmos serve --workers 1, "
                "as make run starts, or llmos worker): 6-9 minutes on 2 cores"
            )
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from llmos.config import PretrainConfig, load_config
    from llmos.recipes.pretrain import pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    result = pretrain(cfg, resume=args.resume)
    if not result.is_main:
        return 0
    print(result.format_report())
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from llmos.config import FinetuneConfig, load_config
    from llmos.recipes.finetune import finetune

    overrides = [*args.overrides, *(["data.skip_bad_rows=true"] if args.skip_bad_rows else [])]
    cfg = load_config(FinetuneConfig, args.config, overrides)
    result = finetune(cfg, resume=args.resume)
    if not result.is_main:
        return 0
    print(result.format_report())
    return 0
