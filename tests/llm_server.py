"""A real llama-cpp-python OpenAI-compatible server on SmolLM2-135M, for tests that need an
HTTP LLM endpoint rather than a stand-in."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import IO

from voiceagent_plugins.llamacpp_llm import bundled_model_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(chat_format: str | None = None, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run the server on a free loopback port and yield its base URL (``http://…/v1``)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
           # queue requests instead of letting a new one cut the running stream short, so
           # concurrent clients each get whole replies
           "--interrupt_requests", "False"]
    if chat_format:
        cmd += ["--chat_format", chat_format]
    base_url = f"http://127.0.0.1:{port}/v1"
    # a file, not a pipe: the server logs a lot and would block on a full pipe nobody reads
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, base_url, log, startup_timeout)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: IO[bytes],
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server not ready after {timeout:g} s:\n{_tail(log)}")


def _tail(log: IO[bytes], limit: int = 3000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]
