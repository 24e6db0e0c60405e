"""Callers per worker at a target latency, and how capacity grows with workers: SIP callers
through the Kamailio front of a cluster on this machine (scripts/cluster.sh: the llama.cpp
server shared by every worker).

    python benchmarks/cluster_load.py [--workers 1 2] [--callers 1 2 3] [--target 2.0]
        [--clips NAME ...] [--runs 2] [--agent FILE] [--json]

For each number of workers, a cluster is started (``--sip-workers W``, each worker taking any
number of calls) and warmed up with one call per worker; then, for each load level ``C`` in
``--callers``, C x W callers call the front at once (0.3 s apart), each saying one clip and
listening, ``--runs`` times in its call (sip_latency.Caller: the turn's latency is from its
last loud packet of speech to the agent's first loud packet). A level is within target when
the 90th percentile of its turns' latencies is at most ``--target`` seconds and every turn
was answered; a worker's capacity is the highest level within target. The numbers depend on
what else the machine runs: its load average before each level is printed beside them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import REPO, clips, emit, median, ms, parser
from sip_latency import TAIL, Caller

from voiceagent.audio import load_audio, resample
from voiceagent.telephony.media import TELEPHONE_RATE

CLUSTER_SH = REPO / "scripts" / "cluster.sh"
#: short questions that the agent answers promptly alone (benchmarks.md, SIP)
DEFAULT_CLIPS = ["timit_ldc93s1", "harvard_sb_spk1_snt2", "azure_whats_the_weather_like"]
SIP_PORT, LLM_PORT = 35060, 35090  # the front's workers on 35061..


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def cluster(command: str, run_dir: Path, *args: str) -> None:
    env = {**os.environ, "VOICEAGENT_PYTHON": sys.executable, "VOICEAGENT_RUN_DIR": str(run_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins"),
                                          os.environ.get("PYTHONPATH", "")])}
    subprocess.run([str(CLUSTER_SH), command, *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)


async def one_caller(turn: np.ndarray, runs: int, delay: float) -> tuple[list[float], int]:
    """One call to the front: the latencies of its answered turns, and how many it said."""
    await asyncio.sleep(delay)
    caller = Caller(("127.0.0.1", SIP_PORT))
    await caller.dial()
    listener = asyncio.ensure_future(caller.listen())
    try:
        return await caller.turns(turn, runs), runs
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await caller.hang_up()


async def level(callers: int, turns: list[np.ndarray], runs: int, target: float) -> dict:
    load_before = os.getloadavg()[0]
    results = await asyncio.gather(*[
        one_caller(turns[i % len(turns)], runs, 0.3 * i) for i in range(callers)],
        return_exceptions=True)
    latencies = [v for r in results if not isinstance(r, BaseException) for v in r[0]]
    said = sum(r[1] if not isinstance(r, BaseException) else runs for r in results)
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    p90 = percentile(latencies, 90)
    return {"callers": callers, "turns": said, "answered": len(latencies),
            "median": median(latencies), "p90": p90, "failed_calls": failed,
            "within_target": p90 is not None and p90 <= target and len(latencies) == said,
            "load_average_before": round(load_before, 2)}


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.set_defaults(runs=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--callers", type=int, nargs="+", default=[1, 2, 3],
                   help="load levels: callers at once per worker")
    p.add_argument("--target", type=float, default=2.0,
                   help="the 90th percentile of turn latency a level must stay within (s)")
    p.add_argument("--agent", default="examples/basic_agent.py")
    args = p.parse_args()
    args.clips = args.clips or DEFAULT_CLIPS
    selected = clips(args)
    turns = [np.concatenate([resample(load_audio(c.path), 16_000, TELEPHONE_RATE),
                             np.zeros(int(TAIL * TELEPHONE_RATE), np.float32)])
             for c in selected]
    figures: dict = {"target": args.target, "runs": args.runs,
                     "clips": [c.name for c in selected], "clusters": []}
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="cluster-load-") as run:
            cluster("up", Path(run), "--sip-workers", str(workers), "--http-workers", "0",
                    "--sip-port", str(SIP_PORT), "--llm-port", str(LLM_PORT),
                    "--max-sessions", "64", "--probe-interval", "1", "--agent", args.agent)
            try:
                # a first call per worker, not counted: a fresh process's first decodes and
                # the LLM server's first prompt are slow
                await level(workers, turns[:1], 1, args.target)
                levels = [await level(per_worker * workers, turns, args.runs, args.target)
                          for per_worker in args.callers]
            finally:
                cluster("down", Path(run))
        within = [lv["callers"] // workers for lv in levels if lv["within_target"]]
        figures["clusters"].append({"workers": workers, "levels": levels,
                                    "callers_per_worker": max(within, default=0),
                                    "total_callers": max(within, default=0) * workers})

    lines = [f"{'workers':>7} {'callers':>7} {'turns':>5} {'answered':>8} {'median':>7} "
             f"{'p90':>7} {'target':>6} {'load':>5}"]
    for c in figures["clusters"]:
        for lv in c["levels"]:
            lines.append(f"{c['workers']:7d} {lv['callers']:7d} {lv['turns']:5d} "
                         f"{lv['answered']:8d} {ms(lv['median'])} {ms(lv['p90'])} "
                         f"{'yes' if lv['within_target'] else 'no':>6} "
                         f"{lv['load_average_before']:5.1f}")
        lines.append(f"  {c['workers']} worker(s): {c['callers_per_worker']} callers per worker, "
                     f"{c['total_callers']} in all within {args.target:g} s (p90)")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
