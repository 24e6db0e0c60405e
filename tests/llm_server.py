"""A real llama-cpp-python OpenAI-compatible server on SmolLM2-135M, for tests that need an
HTTP LLM endpoint rather than a stand-in."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import IO

from cli_server import free_port

from voiceagent_plugins.llamacpp_llm import bundled_model_path


class LlamaServer:
    """The server as a process a test can also crash (``kill``) and ``start`` again on the same
    port, as a supervisor would restart it."""

    def __init__(self, chat_format: str | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._cmd = [sys.executable, "-m", "llama_cpp.server", "--model",
                     str(bundled_model_path()), "--host", "127.0.0.1", "--port", str(self.port),
                     "--n_ctx", "2048",
                     # queue requests instead of letting a new one cut the running stream
                     # short, so concurrent clients each get whole replies
                     "--interrupt_requests", "False"]
        if chat_format:
            self._cmd += ["--chat_format", chat_format]
        # a file, not a pipe: the server logs a lot and would block on a full pipe nobody reads
        self._log = tempfile.TemporaryFile()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self._proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT)
        _wait_ready(self._proc, self.base_url, self._log, timeout)

    def kill(self) -> None:
        """SIGKILL: the server dies mid-request, as in a crash or an OOM kill."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextlib.contextmanager
def llama_server(chat_format: str | None = None, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run the server on a free loopback port and yield its base URL (``http://…/v1``)."""
    server = LlamaServer(chat_format)
    try:
        server.start(startup_timeout)
        yield server.base_url
    finally:
        server.stop()


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
