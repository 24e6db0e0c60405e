"""``voiceagent serve`` as the README runs it: a separate process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def voiceagent_serve(agent_file: str, *args: str, startup_timeout: float = 180.0,
                     output: int | None = subprocess.DEVNULL, checkout: Path = REPO
                     ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the server, wait until /health answers, yield its URL and process; stop it.
    ``checkout``: whose code it runs (default: this one)."""
    env = None
    if checkout != REPO:
        env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'plugins'}"}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voiceagent.cli", "serve", agent_file, "--port", str(port),
         "--ice-host-address", "127.0.0.1", *args],
        cwd=checkout, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, "voiceagent serve", startup_timeout)
        yield url, proc
    finally:
        stop(proc)


def wait_healthy(url: str, proc: subprocess.Popen, name: str, timeout: float) -> None:
    """Until ``url``/health answers 200; a clear error if ``proc`` exits or it takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not come up")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
