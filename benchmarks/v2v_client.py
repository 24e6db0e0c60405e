"""Client-side voice-to-voice over the real WebRTC path, for 1 and K callers at once, and
side by side with Pipecat 1.14.

    python benchmarks/v2v_client.py [--callers 1 4] [--runs 2] [--clips NAME ...]
        [--agent examples/basic_agent.py] [--llm-server] [--pipecat] [--json]

An independent aiortc caller (voiceagent_eval/webrtc_client.py) places a call to
``voiceagent serve`` (a separate process on loopback), speaks a clip after 1.5 s of silence and
times the reply: from the moment the 20 ms frame holding the clip's last voiced sample (the last
frame within 35 dB of its loudest) went out to the first received agent frame above -40 dBFS.
So it includes everything a listener waits for: Opus both ways, aiortc's jitter buffers, the
server's inbound path, end of turn, the models and the outbound track.

``--callers 1 4``: each measurement places K calls at once, each speaking another clip;
medians and the worst over all of them, per K. A caller with no reply within 20 s counts as
unanswered.

``--baseline CHECKOUT``: also ``voiceagent serve`` from another checkout (its code, this
agent), measured in turn with the others: a before/after of a change in one run.

``--pipecat``: also a Pipecat 1.14 bot (benchmarks/pipecat_bot.py, run with
``--pipecat-python``, default /work/venv-pipecat/bin/python) with the same models: Silero
VAD and its default Smart Turn stop strategy, faster-whisper tiny.en segmented, SmolLM2 through
a llama.cpp OpenAI server, Piper joe. voiceagent then takes its LLM from the same server
(``--llm-server`` alone does that without Pipecat). The two are measured in turn, clip by
clip, alternating which goes first, so load from other jobs falls on both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from common import REPO, clips, emit, median, ms, parser

sys.path.insert(0, str(REPO / "tests"))
from cli_server import free_port, stop, voiceagent_serve, wait_healthy  # noqa: E402
from llm_server import LlamaServer  # noqa: E402

from voiceagent.audio import load_audio  # noqa: E402
from voiceagent.metrics import STAGES  # noqa: E402
from voiceagent_eval.webrtc_client import TimedReply, time_reply  # noqa: E402

SETTLE = 1.0  # seconds between measurements: the last replies' work is cancelled by then
PIPECAT_PYTHON = Path("/work/venv-pipecat/bin/python")
# voiceagent's llama.cpp defaults, for the LLM on the server (Pipecat's bot sets the same)
LLM_OPTIONS = ("temperature=0.3", "max_tokens=160")


@contextlib.contextmanager
def llama_server() -> Iterator[str]:
    server = LlamaServer()
    try:
        server.start(120)
        yield server.base_url
    finally:
        server.stop()


@contextlib.contextmanager
def pipecat_bot(python: Path, llm_url: str) -> Iterator[str]:
    """benchmarks/pipecat_bot.py in Pipecat's venv; yields its offer URL."""
    from voiceagent_plugins.piper_tts import bundled_model_path as piper_voice
    from voiceagent_plugins.whisper_stt import bundled_model_path as whisper_model

    port = free_port()
    log = open(os.environ.get("PIPECAT_LOG", os.devnull), "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(python), str(REPO / "benchmarks" / "pipecat_bot.py"), "--port", str(port),
         "--llm-url", llm_url, "--whisper", str(whisper_model()),
         "--piper-voice", str(piper_voice())],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, "the Pipecat bot (set PIPECAT_LOG=FILE to see why)", 120)
        yield f"{url}/api/offer"
    finally:
        stop(proc)
        log.close()


async def measure(targets: dict[str, str], audio: dict, callers: list[int], runs: int,
                  verbose: bool) -> dict[str, dict[int, list[TimedReply]]]:
    """Every target's replies per number of callers at once."""
    names = list(audio)
    results: dict[str, dict[int, list[TimedReply]]] = {t: {k: [] for k in callers}
                                                       for t in targets}
    order = list(targets)
    for k in callers:
        for run in range(runs):
            for first in range(0, len(names), k):
                group = [names[(first + i) % len(names)] for i in range(k)]
                for target in order:
                    replies = await asyncio.gather(*(time_reply(targets[target], audio[name])
                                                     for name in group))
                    results[target][k] += replies
                    if verbose:
                        shown = " ".join(ms(r.voice_to_voice, 5) for r in replies)
                        print(f"K={k} run {run + 1} {target:10} {','.join(group)}: {shown}",
                              file=sys.stderr, flush=True)
                    await asyncio.sleep(SETTLE)
                order = order[1:] + order[:1]  # each side goes first in turn
    return results


def summary(replies: list[TimedReply]) -> dict:
    answered = [r.voice_to_voice for r in replies if r.voice_to_voice is not None]
    return {"calls": len(replies), "answered": len(answered), "median": median(answered),
            "worst": round(max(answered), 4) if answered else None,
            # the parts' medians, where the server reported its own figure (voiceagent)
            **{part: median([getattr(r, part) for r in replies])
               for part in ("inbound", "server", "outbound")},
            # how late the agent's packets came, as a browser's jitter buffer sees it
            "packet_delay": median([r.packet_delay for r in replies]),
            # the server's part by stage (its latency_breakdown events), medians
            "breakdown": {stage: median([r.breakdown[stage] for r in replies if r.breakdown])
                          for stage, _ in STAGES},
            "drafts_committed": sum(bool(r.breakdown and r.breakdown["draft"]) for r in replies),
            "latencies": [None if r.voice_to_voice is None else round(r.voice_to_voice, 3)
                          for r in replies]}


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.set_defaults(runs=2)
    p.add_argument("--agent", default=str(REPO / "examples" / "basic_agent.py"))
    p.add_argument("--callers", type=int, nargs="+", default=[1], metavar="K",
                   help="callers at once, one measurement series per value (default: 1)")
    p.add_argument("--llm-server", action="store_true",
                   help="voiceagent's LLM on a llama.cpp OpenAI server (SmolLM2)")
    p.add_argument("--pipecat", action="store_true",
                   help="also measure a Pipecat 1.14 bot with the same models (implies "
                        "--llm-server)")
    p.add_argument("--pipecat-python", type=Path, default=PIPECAT_PYTHON)
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also measure voiceagent as another checkout has it (e.g. before a "
                        "change), interleaved like Pipecat")
    p.add_argument("--verbose", action="store_true", help="every measurement on stderr")
    args = p.parse_args()
    selected = clips(args)
    if not args.clips:
        selected = [c for c in selected if c.seconds <= 4.0]  # short questions by default
    audio = {c.name: load_audio(c.path) for c in selected}

    with contextlib.ExitStack() as stack:
        targets: dict[str, str] = {}
        # room for K callers while the last measurement's sessions are still closing
        serve_args = ["--max-sessions", str(2 * max(args.callers))]
        llm_server = args.llm_server or args.pipecat
        if llm_server:
            llm_url = stack.enter_context(llama_server())
            serve_args += ["--llm", "openai", "--llm-option", f"base_url={llm_url}",
                          "--llm-option", "model=smollm2"]
            serve_args += [a for o in LLM_OPTIONS for a in ("--llm-option", o)]
            if args.pipecat:
                targets["pipecat"] = stack.enter_context(
                    pipecat_bot(args.pipecat_python, llm_url))
        url, _ = stack.enter_context(voiceagent_serve(args.agent, *serve_args))
        targets = {"voiceagent": f"{url}/api/offer", **targets}
        if args.baseline:
            url, _ = stack.enter_context(voiceagent_serve(
                args.agent, *serve_args, checkout=args.baseline.resolve()))
            targets["baseline"] = f"{url}/api/offer"
        results = asyncio.run(measure(targets, audio, args.callers, args.runs, args.verbose))

    figures: dict = {"runs": args.runs, "clips": list(audio), "llm_server": llm_server,
                     "callers": {str(k): {t: summary(results[t][k]) for t in targets}
                                 for k in args.callers}}
    lines = [f"{'callers':>7} {'side':10} {'answered':>9} {'median':>7} {'worst':>7} "
             f"{'ratio':>6} {'inbound':>7} {'server':>7} {'outbound':>8} {'late':>5}"]
    for k in args.callers:
        rows = figures["callers"][str(k)]
        base = rows.get("pipecat", {}).get("median")
        for target, row in rows.items():
            ratio = (f"{row['median'] / base:6.2f}" if base and row["median"] is not None
                     and target != "pipecat" else f"{'':6}")
            lines.append(f"{k:7} {target:10} {row['answered']:4}/{row['calls']:<4} "
                         f"{ms(row['median'])} {ms(row['worst'])} {ratio} "
                         f"{ms(row['inbound'])} {ms(row['server'])} {ms(row['outbound'], 8)}"
                         f" {ms(row['packet_delay'], 5)}")
    lines.append("(ms; ratio: the median over Pipecat's; inbound, server, outbound: "
                 "medians of the parts where the server reports its own voice-to-voice; late: "
                 "median over calls of the agent's packets' 99th-percentile delay against the "
                 "earliest of the 2 s before, what an adaptive jitter buffer must absorb)")
    lines.append(f"\n{'callers':>7} {'side':10} " + " ".join(f"{s:>15}" for s, _ in STAGES)
                 + " drafts")
    for k in args.callers:
        for target, row in figures["callers"][str(k)].items():
            if target != "pipecat":
                lines.append(f"{k:7} {target:10} " + " ".join(
                    ms(row["breakdown"][s], 15) for s, _ in STAGES)
                    + f" {row['drafts_committed']:3}/{row['answered']}")
    lines.append("(the server part by stage, medians of its latency_breakdown events; drafts: "
                 "replies that were committed drafts)")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    main()
