"""scripts/cluster.sh as the tests drive it: a whole cluster (the LLM server, workers, Kamailio
and/or HAProxy) on free loopback ports, with a run directory of its own, and what a test
reads from it: which worker took a call, a worker's pid and log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sip_peers import free_port

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
KAMAILIO = shutil.which("kamailio")
HAPROXY = shutil.which("haproxy")


@dataclass
class Cluster:
    run_dir: Path
    sip_port: int  # Kamailio; SIP worker i listens on sip_port + i
    http_port: int  # HAProxy; HTTP worker i listens on http_port + i
    env: dict[str, str]

    def pid(self, name: str) -> int:
        return int((self.run_dir / f"{name}.pid").read_text())

    def log(self, name: str) -> str:
        return (self.run_dir / "logs" / f"{name}.log").read_text(errors="replace")

    def events(self, name: str) -> list[dict]:
        path = self.run_dir / "logs" / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def worker_of_call(self, call_id: str, workers: int = 2) -> str | None:
        """The SIP worker (``sip-1`` ...) whose events record the call."""
        for i in range(1, workers + 1):
            if any(e["type"] == "call" and e["call_id"] == call_id
                   for e in self.events(f"sip-{i}")):
                return f"sip-{i}"
        return None

    def logs(self) -> str:
        """Every log's tail, for a failure message."""
        return "\n".join(f"== {path.name}\n{path.read_text(errors='replace')[-1500:]}"
                         for path in sorted((self.run_dir / "logs").glob("*.log")))


@contextlib.contextmanager
def cluster(*args: str) -> Iterator[Cluster]:
    """``cluster.sh up`` with ``args`` on free ports; ``down`` afterwards, whatever happened."""
    run_dir = Path(tempfile.mkdtemp(prefix="voiceagent-cluster-"))
    env = {**os.environ, "VOICEAGENT_PYTHON": sys.executable, "VOICEAGENT_RUN_DIR": str(run_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins"),
                                          os.environ.get("PYTHONPATH", "")])}
    ports = Cluster(run_dir, free_port(), free_port(), env)
    try:
        up = subprocess.run(
            [str(CLUSTER_SH), "up", "--sip-port", str(ports.sip_port), "--http-port",
             str(ports.http_port), "--llm-port", str(free_port()), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        if up.returncode != 0:
            raise RuntimeError(f"cluster.sh up failed ({up.returncode}): {up.stderr}\n"
                               f"{ports.logs() if (run_dir / 'logs').exists() else ''}")
        yield ports
    finally:
        subprocess.run([str(CLUSTER_SH), "down"], cwd=REPO, env=env, capture_output=True,
                       timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)


async def until_gone(pid: int, timeout: float) -> None:
    """Until process ``pid`` has exited (a zombie counts: cluster.sh's children are not
    ours to reap)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid):
        assert time.monotonic() < deadline, f"process {pid} still there"
        await asyncio.sleep(0.2)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1][:3]
    except OSError:
        return b" Z "
