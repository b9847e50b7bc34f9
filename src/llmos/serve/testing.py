"""The server inside this process, for tests, benchmarks and notebooks: a free port, uvicorn in
a background thread, and the flags headless Chromium needs to drive the console here.

    with UvicornThread(create_app(settings), free_port()) as server:
        httpx.get(server.url + "/healthz")
"""

from __future__ import annotations

import socket
import threading
import time

# What Chromium needs on a machine without a display or a network beyond localhost: no GPU,
# no background connections (refused here, many at a time), no first-run or sync work.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """uvicorn serving an ASGI app on 127.0.0.1:``port`` in a daemon thread of this process;
    entering waits until it accepts connections (or fails after ``start_timeout`` seconds),
    leaving stops it gracefully (the app's shutdown runs)."""

    def __init__(self, app: object, port: int, start_timeout: float = 60) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.start_timeout = start_timeout

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
