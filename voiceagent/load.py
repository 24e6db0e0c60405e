"""How busy a worker is, for the front end that picks one (HAProxy's health check on
``/health``, Kamailio's OPTIONS probes): its sessions against its capacity, whether it
drains, and its CPU (the process's share and the machine's load average).

The figures are cheap enough to compute on every probe: two clock reads and
``os.getloadavg()``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Literal

LoadStatus = Literal["ok", "full", "draining"]


class CpuMeter:
    """The process's CPU use in cores (1.0: one core busy), averaged over at least
    ``window`` seconds: a probe every 100 ms must not read the noise of one request."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._since = (time.monotonic(), time.process_time())
        self._cores = 0.0

    def cores(self) -> float:
        now, cpu = time.monotonic(), time.process_time()  # every thread of the process
        elapsed = now - self._since[0]
        if elapsed >= self.window:
            self._cores = (cpu - self._since[1]) / elapsed
            self._since = (now, cpu)
        return self._cores


@dataclass(frozen=True)
class WorkerLoad:
    sessions: int
    capacity: int
    #: no new session would be taken (set-ups in progress count against the capacity too)
    full: bool
    draining: bool
    #: cores this process used lately (can exceed 1 with model threads)
    process_cpu: float
    #: the machine's 1-minute load average and its number of cores, to compare it with
    load_average: float
    cpus: int

    @classmethod
    def measure(cls, *, sessions: int, capacity: int, full: bool, draining: bool,
                meter: CpuMeter) -> WorkerLoad:
        return cls(sessions=sessions, capacity=capacity, full=full, draining=draining,
                   process_cpu=meter.cores(), load_average=os.getloadavg()[0],
                   cpus=os.cpu_count() or 1)

    @property
    def status(self) -> LoadStatus:
        if self.draining:
            return "draining"
        return "full" if self.full else "ok"

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "sessions": self.sessions,
                "max_sessions": self.capacity,
                "cpu": {"process": round(self.process_cpu, 3),
                        "load_average": round(self.load_average, 2), "cpus": self.cpus}}

    def as_header(self) -> str:
        """For a SIP response: ``calls=1; max=4; status=ok; cpu=0.52; load=1.10; cpus=2``."""
        return (f"calls={self.sessions}; max={self.capacity}; status={self.status}; "
                f"cpu={self.process_cpu:.2f}; load={self.load_average:.2f}; cpus={self.cpus}")
