"""Serving under load: ``llmos serve`` with micro-batching on and off, driven by wrk over HTTP.

    python bench/serve_load.py --checkpoint runs/sentiment-zh/checkpoint
    python bench/serve_load.py --checkpoint runs/sentiment-zh/checkpoint --clients 1,8,32,64

Two servers are started as subprocesses (``python -m llmos serve``), each on a free port, with
a fresh SQLite store, a user made with ``llmos users create``, ``--rate-limit 0`` and a models
directory holding only a symlink to the checkpoint (the registry's scan follows it): *on* with
--max-batch/--max-wait-ms (default 32 / 5 ms), *off* with max-batch 1 and max-wait 0. Each is
warmed up (the first request loads the model, then --warmup seconds of load). Both stay up; for
each client count the two are driven in turns, off then on, for --seconds each (the idle one
waits in epoll and costs nothing).

The load generator is wrk (``apt-get install wrk``), in its own process: C, epoll, one thread.
On this 2-core machine it takes about 1 % of a core (``wrk_cores`` in --json) and leaves the
rest to the server; a Python client (asyncio + httpx) would spend interpreter time on every
request, of the same kind as the server's HTTP layer, on the same two cores, and so slow down
what it measures. Each wrk connection is one
client: keep-alive, closed loop (the next request leaves when the answer is back), one text of
the checkpoint's test split per request, cycling through the split in dataset order (both
servers see the same sequence). wrk records every request's latency (write to complete
response); a Lua ``done()`` reports p50/p95/p99 from it and every status outside 2xx (counted
in ``response()``), plus socket errors and timeouts: all must be 0.

Reported per run: requests/s, latency percentiles, errors, the mean batch size and the share of
the wall time the model's thread spent in batches (both from the ``llmos_batch_*`` histograms
of GET /metrics, before/after the run), the server process's CPU (cores busy, CPU ms per
request), and the cores everything else on the machine used meanwhile (``/proc/stat`` less the
server and wrk: other jobs; a clean run shows ~0). Then per client count the ratios on/off of
throughput and of p95, against the issue's targets (>= 3x throughput and p95 <= 1.2x at 32
clients).

Two more things, measured in this process: the model alone (``Pipeline.classify`` on one text
at a time against batches of --max-batch, the same --alone-texts texts, in turns, median of 3),
whose ratio is about what batching could reach if requests cost nothing outside the model; and
that answers are right: --check texts sent as
concurrent single-text requests to each server must get the labels ``llmos.load(ckpt).classify``
gives them (mismatches and the largest probability difference printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import llmos
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification
from llmos.serve.testing import free_port

# Runs in wrk's Lua: each connection sends the next body of the file named by the script's
# argument; response() counts statuses outside 2xx per thread, done() sums them and prints one
# JSON line with the latency percentiles (wrk records microseconds).
WRK_SCRIPT = """
local bodies, next_body, threads = {}, 0, {}
bad = 0
function setup(thread) table.insert(threads, thread) end
function init(args)
  for line in io.lines(args[1]) do table.insert(bodies, line) end
end
function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/v1/classify", nil, bodies[next_body])
end
function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local non2xx = 0
  for _, t in ipairs(threads) do non2xx = non2xx + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %.1f, ' ..
    '"max_us": %d}\\n',
    summary.requests, summary.duration, non2xx, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean,
    latency.max))
end
"""


@dataclass
class LiveServer:
    name: str
    proc: subprocess.Popen
    port: int
    key: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def http(url: str, body: dict | None = None, key: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextlib.contextmanager
def live_server(
    name: str, models: Path, model: str, workdir: Path, args: argparse.Namespace, batch: bool
) -> Iterator[LiveServer]:
    """``llmos serve`` in a subprocess with its own store and user, ready and warmed up."""
    env = dict(os.environ, LLMOS_DATABASE_URL=f"sqlite:///{workdir / name}.db")
    if args.server_threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.server_threads)
    cli = [sys.executable, "-m", "llmos"]
    out = subprocess.run(
        [*cli, "users", "create", "bench", "--admin"], env=env, capture_output=True, text=True
    )
    found = re.search(r"API key \(shown once, store it now\): (\S+)", out.stdout)
    if out.returncode or not found:
        raise RuntimeError(f"llmos users create failed: {out.stdout}{out.stderr}")
    port = free_port()
    max_batch, max_wait = (args.max_batch, args.max_wait_ms) if batch else (1, 0)
    cmd = [*cli, "serve", "--models", str(models), "--port", str(port), "--rate-limit", "0"]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait), "--queue-size", "256"]
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    srv = LiveServer(name, proc, port, found.group(1), log_path)
    try:
        _wait_ready(srv)
        status, body = http(f"{srv.url}/v1/classify", {"model": model, "texts": ["ok"]}, srv.key)
        if status != 200:
            raise RuntimeError(f"{name}: warm-up request answered {status}: {body[:300]!r}")
        yield srv
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server as Ctrl-C does (SIGINT), killing it after 30 s; nothing if it ended."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(srv: LiveServer, timeout: float = 60) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{srv.name} server exited:\n{srv.log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if http(f"{srv.url}/readyz")[0] == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{srv.name} server not ready after {timeout} s")


def batch_totals(srv: LiveServer, model: str) -> dict[str, float]:
    """Sums and counts of the model's batch histograms, and the refusals, from /metrics."""
    text = http(f"{srv.url}/metrics")[1].decode()
    out = {"batch_size_sum": 0.0, "batch_size_count": 0.0, "batch_seconds_sum": 0.0}
    out["rejected"] = 0.0
    for line in text.splitlines():
        m = re.match(
            r"llmos_(batch_size_sum|batch_size_count|batch_seconds_sum)\{(.*)\} (\S+)", line
        )
        if m and f'model="{model}"' in m.group(2):
            out[m.group(1)] += float(m.group(3))
        if line.startswith("llmos_rejected_total"):
            out["rejected"] += float(line.split()[-1])
    return out


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used by process ``pid`` (user + system), or by the whole machine."""
    tick = os.sysconf("SC_CLK_TCK")
    if pid is None:  # /proc/stat: user nice system idle iowait irq softirq steal
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        return (sum(map(int, fields)) - int(fields[3]) - int(fields[4])) / tick
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def run_wrk(srv: LiveServer, clients: int, seconds: int, script: Path, bodies: Path) -> dict:
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "60s", "-s", str(script)]
    cmd += ["-H", f"Authorization: Bearer {srv.key}", "-H", "Content-Type: application/json"]
    cmd += [srv.url, "--", str(bodies)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True)
    out = done.stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}{done.stderr}")
    result = json.loads(line[len("RESULT ") :])
    wrk_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result["wrk_cores"] = wrk_cpu / (result["duration_us"] / 1e6)
    return result


def measure(srv: LiveServer, model: str, clients: int, args: argparse.Namespace, files) -> dict:
    """One wrk run against a server, with the server's batch metrics and CPU around it."""
    m0, c0, all0 = batch_totals(srv, model), cpu_seconds(srv.proc.pid), cpu_seconds()
    r = run_wrk(srv, clients, args.seconds, *files)
    m1, c1, all1 = batch_totals(srv, model), cpu_seconds(srv.proc.pid), cpu_seconds()
    secs = r["duration_us"] / 1e6
    batches = m1["batch_size_count"] - m0["batch_size_count"]
    ok = r["requests"] - r["non2xx"]
    return {
        "config": srv.name,
        "clients": clients,
        "requests": r["requests"],
        "rps": ok / secs,
        **{p: r[f"{p}_us"] / 1000 for p in ("p50", "p95", "p99", "mean", "max")},
        "errors": r["non2xx"] + r["socket_errors"] + r["timeouts"],
        "rejected": m1["rejected"] - m0["rejected"],
        "mean_batch": (m1["batch_size_sum"] - m0["batch_size_sum"]) / max(batches, 1),
        "model_busy": (m1["batch_seconds_sum"] - m0["batch_seconds_sum"]) / secs,
        "server_cores": (c1 - c0) / secs,
        "server_cpu_ms": (c1 - c0) / max(r["requests"], 1) * 1000,
        "wrk_cores": r["wrk_cores"],
        # everything else on the machine (other jobs): should be near 0 for a clean run
        "other_cores": (all1 - all0 - (c1 - c0)) / secs - r["wrk_cores"],
    }


def model_alone(pipe, texts: list[str], max_batch: int, repeats: int = 3) -> dict:
    """Texts per second of ``classify`` one text at a time and in batches of ``max_batch``, and
    the cores other processes used meanwhile."""
    pipe.classify(texts[:max_batch])
    times: list[list[float]] = [[], []]
    start, own, machine = time.perf_counter(), time.process_time(), cpu_seconds()
    for _ in range(repeats):
        t = time.perf_counter()
        for text in texts:
            pipe.classify([text])
        times[0].append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(0, len(texts), max_batch):
            pipe.classify(texts[i : i + max_batch])
        times[1].append(time.perf_counter() - t)
    others = cpu_seconds() - machine - (time.process_time() - own)
    return {
        "batch_1": len(texts) / statistics.median(times[0]),
        f"batch_{max_batch}": len(texts) / statistics.median(times[1]),
        "other_cores": others / (time.perf_counter() - start),
    }


def check_answers(srv: LiveServer, model: str, texts: list[str], expected: list[dict]) -> dict:
    """Send each text as its own request, 32 at a time, and compare with ``expected``."""

    def one(text: str) -> dict:
        status, body = http(f"{srv.url}/v1/classify", {"model": model, "texts": [text]}, srv.key)
        assert status == 200, f"{srv.name}: check request answered {status}: {body[:300]!r}"
        return json.loads(body)["results"][0]

    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(one, texts))
    pairs = list(zip(got, expected, strict=True))
    diff = max(abs(g["scores"][k] - e["scores"][k]) for g, e in pairs for k in e["scores"])
    wrong = sum(g["label"] != e["label"] for g, e in pairs)
    return {"config": srv.name, "texts": len(texts), "mismatches": wrong, "max_prob_diff": diff}


ROW = "{:<8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>11}"


HEADER = ("config", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "mean batch")
HEADER += ("model busy", "srv cores", "srv ms/req", "other cores")


def print_header() -> None:
    print(ROW.format(*HEADER))


def print_row(r: dict) -> None:
    print(
        ROW.format(
            r["config"],
            r["clients"],
            f"{r['rps']:.1f}",
            f"{r['p50']:.1f}",
            f"{r['p95']:.1f}",
            f"{r['p99']:.1f}",
            r["errors"],
            f"{r['mean_batch']:.1f}",
            f"{r['model_busy']:.0%}",
            f"{r['server_cores']:.2f}",
            f"{r['server_cpu_ms']:.1f}",
            f"{r['other_cores']:.2f}",
        ),
        flush=True,
    )


def ratios(rows: list[dict]) -> list[dict]:
    out = []
    for clients in sorted({r["clients"] for r in rows}):
        on = next(r for r in rows if r["clients"] == clients and r["config"] == "on")
        off = next(r for r in rows if r["clients"] == clients and r["config"] == "off")
        out.append(
            {
                "clients": clients,
                "throughput_x": on["rps"] / off["rps"],
                "p95_x": on["p95"] / off["p95"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a classification checkpoint")
    ap.add_argument("--dataset", help="its test split's texts (default: task.json's dataset)")
    ap.add_argument("--label-key", default="label", help="label column (intent sets: intent)")
    ap.add_argument(
        "--clients",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[32],
        help="concurrent clients, comma-separated for a sweep (e.g. 1,8,32,64)",
    )
    ap.add_argument("--seconds", type=int, default=20, help="seconds of load per run")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of load before the runs")
    ap.add_argument("--max-batch", type=int, default=32, help="the 'on' server's --max-batch")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="its --max-wait-ms")
    ap.add_argument("--server-threads", type=int, help="OMP_NUM_THREADS of the servers")
    ap.add_argument("--alone-texts", type=int, default=256, help="texts for the model alone")
    ap.add_argument("--check", type=int, default=64, help="texts whose answers are checked")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    logging.getLogger("llmos").setLevel(logging.ERROR)  # no truncation warnings per text

    ckpt = Path(args.checkpoint).resolve()
    pipe = llmos.load(ckpt)
    dataset = args.dataset or pipe.spec.extra.get("dataset")
    rows = read_classification(dataset_files(dataset)["test"], label_key=args.label_key).rows
    texts = [r.text for r in rows]
    name = ckpt.parent.name if ckpt.name == "checkpoint" else ckpt.name
    alone = model_alone(pipe, texts[: args.alone_texts], args.max_batch)
    one, batched = alone["batch_1"], alone[f"batch_{args.max_batch}"]
    expected = pipe.classify(texts[: args.check])
    del pipe
    print(
        f"{name} ({dataset} test: {len(texts)} texts), {args.seconds:g} s per run, "
        f"on = max-batch {args.max_batch} / max-wait {args.max_wait_ms:g} ms, off = 1 / 0; "
        f"wrk -t1, {os.cpu_count()} CPUs"
    )
    print(
        f"model alone ({args.alone_texts} texts, in-process classify): batch 1 {one:.1f} "
        f"texts/s, batch {args.max_batch} {batched:.1f} texts/s = {batched / one:.2f}x "
        f"(the ceiling of batching's gain); other cores {alone['other_cores']:.2f}"
    )

    with tempfile.TemporaryDirectory(prefix="llmos-serve-load-") as tmp:
        work = Path(tmp)
        (work / "models").mkdir()
        (work / "models" / name).symlink_to(ckpt)
        script, bodies = work / "load.lua", work / "bodies.jsonl"
        script.write_text(WRK_SCRIPT)
        bodies.write_text("".join(json.dumps({"model": name, "texts": [t]}) + "\n" for t in texts))
        results, checks = [], []
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(live_server(c, work / "models", name, work, args, c == "on"))
                for c in ("off", "on")
            ]
            for srv in servers:
                run_wrk(srv, max(args.clients), args.warmup, script, bodies)
            print_header()
            for clients in args.clients:
                for srv in servers:  # in turns: off, then on
                    results.append(measure(srv, name, clients, args, (script, bodies)))
                    print_row(results[-1])
            checks = [check_answers(s, name, texts[: args.check], expected) for s in servers]
    report(results, checks, args, alone)


def report(results: list[dict], checks: list[dict], args: argparse.Namespace, alone: dict) -> None:
    print()
    ratio_rows = ratios(results)
    for r in ratio_rows:
        target = ""
        if r["clients"] == 32:
            met = (
                "met" if r["throughput_x"] >= 3 else "not met",
                "met" if r["p95_x"] <= 1.2 else "not met",
            )
            target = f"  targets at 32 clients: >= 3x {met[0]}, p95 <= 1.2x {met[1]}"
        print(
            f"{r['clients']:>3} clients: throughput on/off {r['throughput_x']:.2f}x, "
            f"p95 on/off {r['p95_x']:.2f}x{target}"
        )
    for c in checks:
        print(
            f"answers, batching {c['config']}: {c['mismatches']} of {c['texts']} labels differ "
            f"from llmos.load().classify, largest probability difference {c['max_prob_diff']:.2e}"
        )
    if args.json:
        out = {"args": vars(args), "model_alone": alone, "runs": results, "ratios": ratio_rows}
        out["checks"] = checks
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
