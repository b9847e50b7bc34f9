"""What the OpenAI-compatible surface (/openai/v1) adds over the native routes of the same server.

    python bench/openai_overhead.py                      # runs/e5-zh and runs/gpt-zh/checkpoint
    python bench/openai_overhead.py --rounds 30 --json out.json

One ``llmos serve`` subprocess (fresh SQLite store, a user made with ``llmos users create``,
``--rate-limit 0``) over a models directory of symlinks: the embedding model (``emb``), the GPT
(``gpt``) and ``chat``: the same GPT's files with an instruct ``task.json`` (runs/ has no
instruction-tuned checkpoint; the weights do not change what a request costs, and the prompt is
the same instruction template on both surfaces, so both decode the same tokens).

Pairs, each the native request and its compatible twin with the same work, sent back to back
from one client (alternating which goes first), --rounds times after a warm-up; every request
waits for its whole answer (keep-alive httpx):

    embed 32    POST /v1/embed {texts, kind: passage}     /openai/v1/embeddings {input} (float,
                                                          and base64 as the openai client asks)
    chat 64     POST /v1/generate {prompt, sample, 64}    /openai/v1/chat/completions
                                                          {messages, temperature, seed, max_tokens}
    text 64     POST /v1/generate on gpt                  /openai/v1/completions {prompt, ...}
                (a seeded sample at temperature 1.5, --seed, on both surfaces alike: gpt-zh
                ends greedy decodes after a few tokens; the table says how many were decoded)
    text 1      the same with max_tokens 1: the fixed cost of a request, in milliseconds
    TTFT        /v1/generate stream: first data event     /openai/v1/chat/completions stream: first
                with text                                 chunk with content (not the role chunk)

TTFT is measured with 1 and 8 concurrent clients (8 threads, each one streamed request per
round; streams decode one at a time on the model's thread, so the 8-client median includes
waiting for the others). Reported: medians (and means) per side and their ratio
compatible / native; other jobs on the machine touch both sides alike since they alternate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification
from llmos.serve.testing import free_port

INSTRUCTION = "请写一段关于春天的短文。"
PROMPT = "从前有座山，山里有座庙，"


@contextlib.contextmanager
def server(models: Path, workdir: Path) -> Iterator[tuple[str, str]]:
    """``llmos serve`` in a subprocess; yields its URL and an API key."""
    env = dict(os.environ, LLMOS_DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}")
    cli = [sys.executable, "-m", "llmos"]
    out = subprocess.run(
        [*cli, "users", "create", "bench"], env=env, capture_output=True, text=True
    )
    found = re.search(r"API key \(shown once, store it now\): (\S+)", out.stdout)
    if out.returncode or not found:
        raise RuntimeError(f"llmos users create failed: {out.stdout}{out.stderr}")
    port = free_port()
    cmd = [*cli, "serve", "--models", str(models), "--port", str(port), "--rate-limit", "0"]
    log = open(workdir / "serve.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError((workdir / "serve.log").read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 120 s")
            time.sleep(0.2)
        yield url, found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def models_dir(root: Path, embedder: Path, gpt: Path) -> Path:
    models = root / "models"
    models.mkdir()
    (models / "emb").symlink_to(embedder.resolve())
    (models / "gpt").symlink_to(gpt.resolve())
    chat = models / "chat"
    chat.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (chat / name).symlink_to((gpt / name).resolve())
    (chat / "task.json").write_text(json.dumps({"task": "instruct"}))
    return models


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def paired(
    native: Callable[[], float], compat: Callable[[], float], rounds: int
) -> dict[str, float]:
    """``rounds`` alternating pairs; medians, means and the ratios compatible / native."""
    a, b = [], []
    for i in range(rounds):
        if i % 2:
            b.append(compat())
            a.append(native())
        else:
            a.append(native())
            b.append(compat())
    out = {
        "native_median_ms": 1000 * statistics.median(a),
        "compat_median_ms": 1000 * statistics.median(b),
        "native_mean_ms": 1000 * statistics.fmean(a),
        "compat_mean_ms": 1000 * statistics.fmean(b),
    }
    out["ratio_median"] = out["compat_median_ms"] / out["native_median_ms"]
    out["ratio_mean"] = out["compat_mean_ms"] / out["native_mean_ms"]
    return out


def first_token(
    client: httpx.Client, path: str, body: dict, is_piece: Callable[[dict], bool]
) -> float:
    """Seconds from sending a streamed request to its first data event with text; the rest
    of the stream is read to its end."""
    start = time.perf_counter()
    first = None
    with client.stream("POST", path, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            data = line.startswith("data: {")
            if first is None and data and is_piece(json.loads(line[6:])):
                first = time.perf_counter() - start
    assert first is not None, f"{path}: no text in the stream"
    return first


def concurrent(fn: Callable[[], float], clients: int) -> list[float]:
    results: list[float] = [0.0] * clients

    def run(i: int) -> None:
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--embedder", type=Path, default=Path("runs/e5-zh"))
    p.add_argument("--gpt", type=Path, default=Path("runs/gpt-zh/checkpoint"))
    p.add_argument("--dataset", default="sentiment-zh")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--embed-rounds", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ttft-rounds", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    texts = [r.text for r in read_classification(dataset_files(args.dataset)["test"]).rows][:32]
    results: dict[str, dict[str, float]] = {}
    tokens: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = models_dir(Path(tmp), args.embedder, args.gpt)
        with server(models, Path(tmp)) as (url, key):
            headers = {"Authorization": f"Bearer {key}"}
            c = httpx.Client(base_url=url, headers=headers, timeout=300)

            def post(path: str, body: dict) -> Callable[[], float]:
                def call() -> float:
                    return timed(lambda: c.post(path, json=body).raise_for_status())

                return call

            embed = post("/v1/embed", {"model": "emb", "texts": texts, "kind": "passage"})
            emb_float = post(
                "/openai/v1/embeddings",
                {"model": "emb", "input": texts, "encoding_format": "float"},
            )
            emb_b64 = post(
                "/openai/v1/embeddings",
                {"model": "emb", "input": texts, "encoding_format": "base64"},
            )
            # A seeded sample: gpt-zh (500 steps) ends greedy decodes at its end-of-text token
            # after a few tokens; this seed decodes all 64 (the same tokens on both surfaces).
            sample = {"strategy": "sample", "temperature": 1.5, "seed": args.seed}
            native_gen = {"model": "chat", "prompt": INSTRUCTION, **sample}
            gen = post("/v1/generate", {**native_gen, "max_new_tokens": 64})
            chat_body = {
                "model": "chat",
                "messages": [{"role": "user", "content": INSTRUCTION}],
                "temperature": 1.5,
                "seed": args.seed,
            }
            chat = post("/openai/v1/chat/completions", {**chat_body, "max_tokens": 64})
            cont = {"model": "gpt", **sample, "max_new_tokens": 64}
            gen_gpt = post("/v1/generate", {**cont, "prompt": PROMPT})
            completion_body = {
                "model": "gpt",
                "prompt": PROMPT,
                "temperature": 1.5,
                "seed": args.seed,
            }
            completion = post("/openai/v1/completions", {**completion_body, "max_tokens": 64})
            # Both surfaces give the same text; the compatible one says how many tokens it took.
            for native, path, body, field in (
                (
                    {**native_gen, "max_new_tokens": 64},
                    "/openai/v1/chat/completions",
                    chat_body,
                    "chat",
                ),
                (
                    {**cont, "prompt": PROMPT},
                    "/openai/v1/completions",
                    completion_body,
                    "completions",
                ),
            ):
                a = c.post("/v1/generate", json=native).json()["text"]
                b = c.post(path, json={**body, "max_tokens": 64}).json()
                choice = b["choices"][0]
                assert choice.get("text", choice.get("message", {}).get("content")) == a, field
                tokens[field] = b["usage"]["completion_tokens"]
            for warm in (embed, emb_float, emb_b64, gen, chat, gen_gpt, completion):
                warm()
            results["embed 32 texts, float"] = paired(embed, emb_float, args.embed_rounds)
            results["embed 32 texts, base64"] = paired(embed, emb_b64, args.embed_rounds)
            results[f"chat, {tokens['chat']} tokens"] = paired(gen, chat, args.rounds)
            results[f"completions, {tokens['completions']} tokens"] = paired(
                gen_gpt, completion, args.rounds
            )
            # The fixed cost of a request (HTTP, schemas, auth, queue) with almost no decoding:
            # what the compatible surface adds shows here in milliseconds.
            gen_one = post("/v1/generate", {**cont, "prompt": PROMPT, "max_new_tokens": 1})
            completion_one = post("/openai/v1/completions", {**completion_body, "max_tokens": 1})
            results["completions, 1 token"] = paired(gen_one, completion_one, args.rounds)

            stream_native = {**native_gen, "max_new_tokens": 32, "stream": True}
            stream_compat = {**chat_body, "max_tokens": 32, "stream": True}

            def ttft_native() -> float:
                return first_token(c, "/v1/generate", stream_native, lambda d: bool(d.get("text")))

            def ttft_compat() -> float:
                return first_token(
                    c,
                    "/openai/v1/chat/completions",
                    stream_compat,
                    lambda d: bool(d["choices"] and d["choices"][0]["delta"].get("content")),
                )

            results["TTFT, 1 client"] = paired(ttft_native, ttft_compat, args.ttft_rounds)
            many_native: list[float] = []
            many_compat: list[float] = []
            for i in range(args.ttft_rounds // 2 or 1):
                order = [(ttft_native, many_native), (ttft_compat, many_compat)]
                for fn, sink in order if i % 2 == 0 else order[::-1]:
                    sink.extend(concurrent(fn, 8))
            results["TTFT, 8 clients"] = paired(
                iter(many_native).__next__, iter(many_compat).__next__, len(many_native)
            )
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if "model name" in ln), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores")
    print(
        f"{'':28} {'native ms':>10} {'compat ms':>10} {'ratio (median)':>15} {'ratio (mean)':>13}"
    )
    for name, r in results.items():
        print(
            f"{name:28} {r['native_median_ms']:10.1f} {r['compat_median_ms']:10.1f} "
            f"{r['ratio_median']:15.3f} {r['ratio_mean']:13.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "results": results}, indent=2))


if __name__ == "__main__":
    main()
