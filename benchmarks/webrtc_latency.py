"""Voice-to-voice latency as a browser hears it, over WebRTC on loopback.

    python benchmarks/webrtc_latency.py [--agent examples/basic_agent.py] [--data DIR]
        [--clips NAME ...] [--runs 3] [--in-process] [--json]

Each clip is the fake microphone of a headless Chromium (/usr/bin/chromium, driven by
Playwright) talking to ``voiceagent serve`` (a separate process, as deployed; ``--in-process``
serves from this process instead, whose event loop then also drives the browser, and whose
outbound packets come less evenly: Chromium's jitter buffer grows). Chromium loops the file
(the clip, then silence), so one connection gives ``--runs`` turns. In the page, AnalyserNodes
sample the microphone track and the agent's remote track every 10 ms: a turn's latency is from the
microphone going quiet to the agent's voice first reaching the page, so it includes WebRTC
(Opus both ways, jitter buffers) on top of the server's own figure, reported beside it.

Each turn is split as v2v_client.py splits it: **outbound** from its metrics event reaching the
page (sent with the first audio frame handed to the track) to the agent's voice reaching the
page, **server** the session's own voice-to-voice, **inbound** the rest (the microphone going
quiet to the server's end of speech: Opus, the network, the VAD's placement of the end); the
server's part by stage from its latency_breakdown events; and Chromium's own jitter buffer,
its mean delay per sample played (getStats' ``jitterBufferDelay / jitterBufferEmittedCount``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from common import (
    REPO,
    add_agent_arguments,
    agent_from,
    backend_flags,
    clips,
    emit,
    median,
    ms,
    parser,
)

sys.path.insert(0, str(REPO / "tests"))
from cli_server import voiceagent_serve  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402
from webrtc_harness import (  # noqa: E402
    LEVEL_PROBE,
    Turn,
    connect_page,
    events,
    fake_microphone,
    launch,
    running_server,
    turns_from_levels,
)

from voiceagent.metrics import STAGES  # noqa: E402
from voiceagent.server import ServerConfig, create_app  # noqa: E402
from voiceagent.session import resolve_backends  # noqa: E402

TAIL = 8.0  # seconds of silence after each clip: time for the agent's answer


async def measure_clip(pw, url: str, clip, runs: int, workdir: Path) -> dict:
    mic = fake_microphone(clip.path, workdir / f"{clip.name}.wav", tail=TAIL)
    loop_seconds = 1.0 + clip.seconds + TAIL
    browser = await launch(pw, mic)
    try:
        page = await connect_page(browser, url)
        await page.evaluate(LEVEL_PROBE)
        deadline = asyncio.get_running_loop().time() + loop_seconds * (runs + 1) + 10
        answered = []
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(1.0)
            turns = turns_from_levels(await page.evaluate("window.levels"))
            # The last turn may still be waiting for its answer.
            answered = [t for t in turns[:-1] if t.latency is not None]
            if len(answered) >= runs:
                break
        received = await events(page)
        buffer = await page.evaluate(JITTER_BUFFER)
    finally:
        await browser.close()
    parts = [split_turn(t, received) for t in answered[:runs]]
    return {"clip": clip.name, "turns": len(parts),
            **{key: buffer.get(key) for key in BUFFER_STATS},
            **{key: median([p[key] for p in parts if p[key] is not None])
               for key in ("browser", "inbound", "server", "outbound")},
            "breakdown": {stage: median([p["breakdown"][stage] for p in parts
                                         if p["breakdown"]]) for stage, _ in STAGES},
            "latencies": [round(p["browser"], 3) for p in parts]}


#: Chromium's jitter buffer on the agent's audio over the call, per sample played: its mean
#: delay and its target (what NetEq aims for from the packets' arrival; never under what the
#: arrival jitter needs), and the packets' interarrival jitter (RFC 3550), all in seconds
JITTER_BUFFER = """async () => {
  let stats = {};
  (await window.voiceagent.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio' && r.jitterBufferEmittedCount)
      stats = {jitter_buffer: r.jitterBufferDelay / r.jitterBufferEmittedCount,
               jitter_buffer_target: r.jitterBufferTargetDelay / r.jitterBufferEmittedCount,
               arrival_jitter: r.jitter}; });
  return stats; }"""
BUFFER_STATS = ("jitter_buffer", "jitter_buffer_target", "arrival_jitter")


def split_turn(turn: Turn, received: list[dict]) -> dict:
    """A turn's latency in parts, from the metrics event that reached the page between the
    microphone going quiet and the agent's voice (none: only the total is known)."""
    metrics = next((e for e in received if e["type"] == "metrics"
                    and turn.speech_end < e["page_time"] <= turn.agent_audio), None)
    if metrics is None:
        return {"browser": turn.latency, "inbound": None, "server": None, "outbound": None,
                "breakdown": None}
    server = metrics["metrics"]["voice_to_voice"]
    outbound = turn.agent_audio - metrics["page_time"]
    breakdown = next((e for e in received if e["type"] == "latency_breakdown"
                      and e["reply_id"] == metrics["reply_id"]), None)
    return {"browser": turn.latency, "inbound": turn.latency - server - outbound,
            "server": server, "outbound": outbound, "breakdown": breakdown}


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    add_agent_arguments(p)
    p.add_argument("--in-process", action="store_true",
                   help="serve from this process (its event loop shared with the browser's "
                        "driver) instead of a separate `voiceagent serve`")
    args = p.parse_args()
    selected = clips(args)
    if not args.clips:
        selected = [c for c in selected if c.seconds <= 4.0]  # short questions by default
    rows = []
    async with contextlib.AsyncExitStack() as stack:
        if args.in_process:
            agent = agent_from(args)
            app = create_app(agent, resolve_backends(agent),
                             ServerConfig(host_addresses=["127.0.0.1"]))
            url = await stack.enter_async_context(running_server(app))
        else:
            url, _ = stack.enter_context(voiceagent_serve(args.agent, *backend_flags(args)))
        pw = await stack.enter_async_context(async_playwright())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for clip in selected:
            rows.append(await measure_clip(pw, url, clip, max(1, args.runs), tmp))
    browser_all = [v for r in rows for v in r["latencies"]]
    figures = {"runs": args.runs, "turns": len(browser_all), "clips_measured": len(rows),
               "median_browser_voice_to_voice": median(browser_all),
               **{f"median_{key}": median([r[key] for r in rows])
                  for key in ("inbound", "server", "outbound", *BUFFER_STATS)},
               "breakdown": {stage: median([r["breakdown"][stage] for r in rows])
                             for stage, _ in STAGES},
               "clips": rows}

    columns = ("browser", "inbound", "server", "outbound", *BUFFER_STATS)
    heads = ("browser", "inbound", "server", "outbound", "buffer", "target", "jitter")
    lines = [f"{'clip (median ms)':40} {'turns':>5} " + " ".join(f"{c:>8}" for c in heads)]
    lines += [f"{r['clip']:40} {r['turns']:5} " + " ".join(ms(r[c], 8) for c in columns)
              for r in rows]
    lines.append(f"{'ALL (median of clips; browser: of turns)':40} {len(browser_all):5} "
                 f"{ms(figures['median_browser_voice_to_voice'], 8)} "
                 + " ".join(ms(figures[f"median_{c}"], 8) for c in columns[1:]))
    lines.append("(buffer, target: Chromium's jitter buffer delay and target, mean per sample "
                 "played; jitter: the agent's packets' interarrival jitter)")
    lines.append("the server's part by stage (medians of clips' medians): " + ", ".join(
        f"{stage} {ms(figures['breakdown'][stage], 0)}" for stage, _ in STAGES))
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
