"""Worker processes: ``llmos worker`` and the ones ``llmos serve --workers N`` starts.

One worker process runs one job at a time (huey's consumer with one thread): a training job
gets the process's cores and memory to itself, and a job that leaks or crashes takes no other
job with it. ``--workers N`` starts N such processes under a supervisor that restarts one that
dies and stops them all with itself (each child also stops when it sees its parent gone).

Stopping: SIGTERM (what the supervisor and ``llmos serve`` send) puts the running job back in
the queue at once, without counting it against the job's tries; SIGINT (Ctrl-C) waits for
the running job to finish. A worker killed outright (SIGKILL, a lost machine) leaves its job
``running`` with a heartbeat that stops; after ``stale_after_s`` any worker's sweep queues it
again (``attempt`` + 1), up to the job's ``max_attempts``, then fails it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from huey.consumer import Consumer
from huey.signals import SIGNAL_INTERRUPTED

from llmos.errors import ConfigError
from llmos.jobs.runner import Runner
from llmos.store.db import Store, database_url

log = logging.getLogger("llmos.jobs")
PARENT_ENV = "LLMOS_WORKER_PARENT"  # set in a supervised worker: its supervisor's pid
STOP_GRACE_S = 15.0  # how long a stopping supervisor waits for its workers


@dataclass
class WorkerSettings:
    """What ``llmos worker`` runs with.

    Attributes:
        database_url: the store's SQLAlchemy URL (default: ``$LLMOS_DATABASE_URL``, else the
            SQLite file); every worker and server sharing it shares the queue.
        workers: worker processes, each running one job at a time.
        heartbeat_s: how often a running job's progress, log and heartbeat are written (and a
            cancel request is noticed).
        stale_after_s: a running job whose heartbeat is older than this is taken for its
            worker's death and queued again.
        poll_s: the longest wait between two looks at an empty queue.
    """

    database_url: str | None = None
    workers: int = 1
    heartbeat_s: float = 2.0
    stale_after_s: float = 30.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "workers": self.workers >= 1,
            "heartbeat_s": self.heartbeat_s > 0,
            "stale_after_s": self.stale_after_s > self.heartbeat_s,
            "poll_s": self.poll_s > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"worker setting {name} is out of range: {getattr(self, name)}")


def run_worker(settings: WorkerSettings) -> None:
    """Run worker processes until stopped: this process itself for one, a supervisor of
    ``settings.workers`` child processes otherwise."""
    if settings.workers > 1:
        supervise(settings)
        return
    logging.getLogger("huey").setLevel(logging.WARNING)  # its per-task INFO lines: ours say more
    store = Store(settings.database_url or database_url())
    runner = Runner(store, settings.heartbeat_s, settings.stale_after_s)

    @runner.huey.signal(SIGNAL_INTERRUPTED)
    def interrupted(signal_name: str, task: object) -> None:
        runner.interrupted(task.args[0])  # type: ignore[attr-defined]

    runner.sweep(startup=True)
    consumer = Consumer(
        runner.huey,
        workers=1,
        periodic=False,
        initial_delay=min(0.1, settings.poll_s),
        max_delay=settings.poll_s,
    )
    stop = threading.Event()
    keeper = threading.Thread(target=_keep, args=(runner, settings, stop), daemon=True)
    keeper.start()
    log.info("worker %s waiting for jobs in %s", runner.name, store.engine.url)
    try:
        consumer.run()
    finally:
        stop.set()
        runner.huey.storage.close()
        store.close()


def _keep(runner: Runner, settings: WorkerSettings, stop: threading.Event) -> None:
    """Sweep for dead workers' jobs now and then, and stop this worker when its supervisor is
    gone (a supervised worker must not outlive it)."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    every = max(settings.heartbeat_s, settings.stale_after_s / 3)
    last = time.monotonic()
    while not stop.wait(min(every, 0.5)):
        if parent and os.getppid() != parent:
            log.warning("worker %s: supervisor %d is gone; stopping", runner.name, parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if time.monotonic() - last >= every:
            last = time.monotonic()
            try:
                runner.sweep()
            except Exception as e:  # the database is away: try again later
                log.warning("worker %s: sweep failed (%s)", runner.name, e)


def worker_command(workers: int, settings: WorkerSettings | None = None) -> list[str]:
    """The command line of a worker process: with ``settings``, their timings as flags (a
    supervisor's children run as it does); without, the process reads them from its
    ``LLMOS_*`` environment like any ``llmos worker``. The database URL travels in the
    environment, never in the command line, where ``ps`` shows passwords."""
    command = [sys.executable, "-m", "llmos", "worker", "--workers", str(workers)]
    if settings is not None:
        command += ["--heartbeat", str(settings.heartbeat_s), "--poll", str(settings.poll_s)]
        command += ["--stale-after", str(settings.stale_after_s)]
    return command


def worker_env(database_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if database_url:
        env["LLMOS_DATABASE_URL"] = database_url
    return env


def supervise(settings: WorkerSettings) -> None:
    """Run ``settings.workers`` single worker processes, restart any that dies, and stop them
    (SIGTERM, then SIGKILL after STOP_GRACE_S) on SIGTERM or SIGINT."""
    env = worker_env(settings.database_url) | {PARENT_ENV: str(os.getpid())}
    command = worker_command(1, settings)
    stopping = threading.Event()

    def stop(signum: int, _: object) -> None:
        stopping.set()

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    procs = [subprocess.Popen(command, env=env) for _ in range(settings.workers)]
    log.info("started %d worker processes", len(procs))
    try:
        while not stopping.wait(0.5):
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    log.warning(
                        "worker process %d exited (%s); starting another", p.pid, p.returncode
                    )
                    procs[i] = subprocess.Popen(command, env=env)
    finally:
        stop_processes(procs)
        for s, handler in old.items():
            signal.signal(s, handler)


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every process, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class WorkerProcesses:
    """``workers`` worker processes beside a server (``llmos serve --workers N``), on its
    database: started with it, stopped with it. Their timings come from the server's
    environment (``LLMOS_HEARTBEAT``, ``LLMOS_STALE_AFTER``, ``LLMOS_POLL``), as for
    ``llmos worker``."""

    def __init__(self, database_url: str, workers: int) -> None:
        self.proc = subprocess.Popen(worker_command(workers), env=worker_env(database_url))

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        stop_processes([self.proc], grace + 5)  # the supervisor itself waits up to grace
