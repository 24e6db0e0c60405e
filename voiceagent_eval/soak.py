"""Soak runs: many sessions one after another (a few at a time), sampling what a leak would
grow: resident memory, threads, open file descriptors and asyncio tasks.

Two ways in, both with real models on real speech:

- ``file_soak``: sessions through the file transport inside this process;
- ``webrtc_soak``: sessions through a running ``voiceagent serve`` (another process), each an
  independent aiortc client that speaks a clip, waits for the agent's spoken reply and hangs
  up. The server's own figures come from /proc and its ``/health``.

Every session must also be answered: a soak that "stays flat" by dropping sessions is not one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

from .speechdata import Clip


@dataclass
class Sample:
    sessions: int
    answered: int
    rss_mb: float
    threads: int
    fds: int
    tasks: int
    seconds: float


@dataclass
class SoakResult:
    samples: list[Sample]

    @property
    def growth(self) -> dict[str, float]:
        """Each figure's last sample minus its value after warm-up: the first third of the run
        (at least one sample) fills lazily created pools, caches and allocator arenas."""
        base = self.samples[max(1, len(self.samples) // 3)] if len(self.samples) > 2 \
            else self.samples[0]
        last = self.samples[-1]
        return {k: round(getattr(last, k) - getattr(base, k), 1)
                for k in ("rss_mb", "threads", "fds", "tasks")}

    def table(self) -> str:
        rows = ["sessions  answered  RSS MB  threads  fds  tasks  elapsed s"]
        rows += [f"{s.sessions:8d}  {s.answered:8d}  {s.rss_mb:6.0f}  {s.threads:7d}  "
                 f"{s.fds:3d}  {s.tasks:5d}  {s.seconds:9.0f}" for s in self.samples]
        rows.append("growth after warm-up: " + ", ".join(f"{k} {v:+g}"
                                                        for k, v in self.growth.items()))
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {"samples": [asdict(s) for s in self.samples], "growth": self.growth}


def proc_figures(pid: int | str = "self") -> tuple[float, int, int]:
    """Resident memory (MB), threads and open file descriptors of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in
                  open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


async def _soak(sessions: int, every: int, parallel: int,
                one: Callable[[int], Awaitable[bool]],
                figures: Callable[[], Awaitable[tuple[float, int, int, int]]],
                progress: Callable[[Sample], object] | None) -> SoakResult:
    started = time.monotonic()
    done = answered = 0
    samples: list[Sample] = []

    async def sample() -> None:
        gc.collect()
        rss, threads, fds, tasks = await figures()
        samples.append(Sample(done, answered, round(rss, 1), threads, fds, tasks,
                              round(time.monotonic() - started, 1)))
        if progress is not None:
            progress(samples[-1])

    await sample()
    while done < sessions:
        batch = min(parallel, sessions - done)
        results = await asyncio.gather(*(one(done + i) for i in range(batch)))
        done += batch
        answered += sum(results)
        if done % every < batch or done == sessions:
            await sample()
    return SoakResult(samples)


async def file_soak(agent, backends: dict, clips: Sequence[Clip], *, sessions: int,
                    every: int, parallel: int = 1, speed: float = 4.0,
                    progress: Callable[[Sample], object] | None = None) -> SoakResult:
    """``sessions`` file-transport sessions in this process, ``parallel`` at a time, each
    speaking one clip (in turn) at ``speed`` times real time; answered = replied in words."""
    from voiceagent.audio import load_audio
    from voiceagent.events import AgentTextEvent
    from voiceagent.runner import converse_with_file

    audio = [load_audio(c.path) for c in clips]

    async def one(i: int) -> bool:
        result = await converse_with_file(agent, audio[i % len(audio)], speed=speed,
                                          max_tail=20.0, backends=backends)
        return result.fatal_error is None and any(
            isinstance(e, AgentTextEvent) and e.final and e.text for e in result.events)

    async def figures() -> tuple[float, int, int, int]:
        await asyncio.sleep(0.2)  # let closed sessions' last callbacks run
        rss, _, fds = proc_figures()
        return rss, threading.active_count(), fds, len(asyncio.all_tasks()) - 1

    return await _soak(sessions, every, parallel, one, figures, progress)


async def webrtc_soak(base_url: str, server_pid: int, clips: Sequence[Clip], *, sessions: int,
                      every: int, parallel: int = 1,
                      progress: Callable[[Sample], object] | None = None) -> SoakResult:
    """``sessions`` WebRTC callers against a running ``voiceagent serve`` (``server_pid``)."""
    import httpx

    from voiceagent.audio import load_audio

    from .webrtc_client import webrtc_session

    audio = [load_audio(c.path) for c in clips]

    async def one(i: int) -> bool:
        return await webrtc_session(base_url, audio[i % len(audio)])

    async def figures() -> tuple[float, int, int, int]:
        async with httpx.AsyncClient(base_url=base_url) as http:
            for _ in range(100):  # until the server has closed every session
                health = (await http.get("/health")).json()
                if health["sessions"] == 0:
                    break
                await asyncio.sleep(0.1)
        # the least of a few readings over a second: a closed peer's sockets and the health
        # request's own connection take a moment to go, a leak stays
        readings = []
        for _ in range(5):
            readings.append(proc_figures(server_pid))
            await asyncio.sleep(0.2)
        rss = readings[-1][0]
        return rss, min(r[1] for r in readings), min(r[2] for r in readings), health["tasks"]

    return await _soak(sessions, every, parallel, one, figures, progress)
