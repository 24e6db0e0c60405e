"""Voice-to-voice latency as a browser hears it, over WebRTC on loopback.

    python benchmarks/webrtc_latency.py [--agent examples/basic_agent.py] [--data DIR]
        [--clips NAME ...] [--runs 3] [--json]

Each clip is the fake microphone of a headless Chromium (/usr/bin/chromium, driven by
Playwright) talking to an in-process ``voiceagent serve``. Chromium loops the file (the clip,
then silence), so one connection gives ``--runs`` turns. In the page, AnalyserNodes sample the
microphone track and the agent's remote track every 10 ms: a turn's latency is from the
microphone going quiet to the agent's voice first reaching the page, so it includes WebRTC
(Opus both ways, jitter buffers) on top of the server's own figure, reported beside it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from common import REPO, agent_benchmark, emit, median, ms

sys.path.insert(0, str(REPO / "tests"))
from playwright.async_api import async_playwright  # noqa: E402
from webrtc_harness import (  # noqa: E402
    LEVEL_PROBE,
    connect_page,
    events,
    fake_microphone,
    launch,
    running_server,
    turns_from_levels,
)

from voiceagent.server import ServerConfig, create_app  # noqa: E402

TAIL = 8.0  # seconds of silence after each clip: time for the agent's answer


async def measure_clip(pw, url: str, clip, runs: int, workdir: Path) -> dict:
    mic = fake_microphone(clip.path, workdir / f"{clip.name}.wav", tail=TAIL)
    loop_seconds = 1.0 + clip.seconds + TAIL
    browser = await launch(pw, mic)
    try:
        page = await connect_page(browser, url)
        await page.evaluate(LEVEL_PROBE)
        deadline = asyncio.get_running_loop().time() + loop_seconds * (runs + 1) + 10
        measured = []
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(1.0)
            turns = turns_from_levels(await page.evaluate("window.levels"))
            # The last turn may still be waiting for its answer.
            measured = [t.latency for t in turns[:-1] if t.latency is not None]
            if len(measured) >= runs:
                break
        server = [e["metrics"]["voice_to_voice"] for e in await events(page)
                  if e["type"] == "metrics"]
    finally:
        await browser.close()
    measured = measured[:runs]
    return {"clip": clip.name, "turns": len(measured), "browser": median(measured),
            "server": median(server[:runs]), "latencies": [round(v, 3) for v in measured]}


async def main() -> None:
    args, selected, agent, backends = agent_benchmark(__doc__)
    if not args.clips:
        selected = [c for c in selected if c.seconds <= 4.0]  # short questions by default
    app = create_app(agent, backends, ServerConfig(host_addresses=["127.0.0.1"]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(app) as url, async_playwright() as pw:
            for clip in selected:
                rows.append(await measure_clip(pw, url, clip, max(1, args.runs), Path(tmp)))
    browser_all = [v for r in rows for v in r["latencies"]]
    figures = {"runs": args.runs, "turns": len(browser_all), "clips_measured": len(rows),
               "median_browser_voice_to_voice": median(browser_all),
               "median_server_voice_to_voice": median([r["server"] for r in rows]),
               "clips": rows}

    lines = [f"{'clip (median ms)':40} {'turns':>5} {'browser':>8} {'server':>8}"]
    lines += [f"{r['clip']:40} {r['turns']:5} {ms(r['browser'], 8)} {ms(r['server'], 8)}"
              for r in rows]
    lines.append(f"{'ALL':40} {len(browser_all):5} "
                 f"{ms(figures['median_browser_voice_to_voice'], 8)} "
                 f"{ms(figures['median_server_voice_to_voice'], 8)}")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
