"""A real Prefect server on loopback, started and stopped by process id.

Dask or Ray task runners need one (worker processes report their task runs to it; the temporary server that a
plain flow call starts lives inside the calling process). Used by the scale-out test and benchmark, and handy for
trying a deployment on one box before pointing PREFECT_API_URL at the site's server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def local_prefect_server(home: Path, *, startup_timeout_s: float = 120) -> Iterator[str]:
    """Yield the API URL of a fresh `prefect server start` whose database lives in HOME; stop it afterwards."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_API_URL": "", "PREFECT_UI_ENABLED": "false"}  # fmt: skip
    log = (home / "server.log").open("wb")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(url, process, startup_timeout_s, home / "server.log")
        yield url
    finally:
        _drain_clients()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _drain_clients() -> None:
    """Send this process's queued logs and events now: Prefect keeps one sender per process, and one still aimed at
    a stopped server retries for minutes (and would carry later runs' events there)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=30)


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not answer within {timeout_s:.0f} s; see {log}")
