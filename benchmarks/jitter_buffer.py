"""What the SIP bridge's jitter buffer adds to a caller's audio: the fixed 3-packet buffer
against the adaptive one, over real UDP on loopback.

    python benchmarks/jitter_buffer.py [--seconds 10] [--runs 3] [--json]

A sender paces 20 ms RTP packets to a call's :class:`RtpEndpoint` (the bridge's socket and
jitter buffer), with each packet held back by a network delay drawn per packet: none (a LAN)
or uniform 0-40 ms (a jittery path, packets reordered). The buffer is read on a 20 ms clock as
the call's input reads it. Reported per setting: the median time a packet waits between its
arrival and being played, the silent ticks in the middle of the feed (underruns) and the
packets lost or skipped. The two buffers take turns, run by run.
"""

from __future__ import annotations

import asyncio
import socket
import statistics

import numpy as np
from common import emit, parser

from voiceagent.telephony.media import FRAME_SAMPLES, PCMU
from voiceagent.telephony.rtp import JitterBuffer, RtpEndpoint, RtpPacket, open_rtp

FRAME = 0.02
NETWORKS = {"lan": 0.0, "jittery 0-40 ms": 0.04}


async def one_run(adaptive: bool, spread: float, seconds: float, seed: int) -> dict:
    loop = asyncio.get_running_loop()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    endpoint = RtpEndpoint(sender.getsockname(), PCMU, 0, None,
                           jitter=JitterBuffer(3, adaptive=adaptive))
    await open_rtp(endpoint, "127.0.0.1", rtcp=False)
    arrived: dict[int, float] = {}
    heard = endpoint.datagram_received

    def note(data: bytes, addr: tuple) -> None:
        arrived[int.from_bytes(data[2:4], "big")] = loop.time()
        heard(data, addr)

    endpoint.datagram_received = note  # type: ignore[method-assign]
    rng = np.random.default_rng(seed)
    count = int(seconds / FRAME)
    start = loop.time() + 0.05

    async def send(seq: int) -> None:
        await asyncio.sleep(max(0.0, start + seq * FRAME + rng.uniform(0, spread) - loop.time()))
        packet = RtpPacket(0, seq, seq * FRAME_SAMPLES, 7, bytes([seq & 0xFF]) * 160)
        await loop.sock_sendto(sender, packet.encode(), ("127.0.0.1", endpoint.local_port))

    sending = [asyncio.ensure_future(send(seq)) for seq in range(count)]
    waits, played, tick = [], [], 0
    try:
        while tick < count + 20:
            await asyncio.sleep(max(0.0, start + tick * FRAME - loop.time()))
            payload = endpoint.jitter.pop()
            played.append(payload is not None)
            if payload is not None:
                waits.append(loop.time() - arrived[_sequence(payload, arrived)])
            tick += 1
    finally:
        await asyncio.gather(*sending, return_exceptions=True)
        assert endpoint.transport is not None
        endpoint.transport.close()
        sender.close()
    first, last = played.index(True), len(played) - played[::-1].index(True)
    jb = endpoint.jitter
    return {"wait_ms": 1000 * statistics.median(waits),
            "underruns": played[first:last].count(False),
            "lost": jb.lost, "skipped": jb.skipped, "late": jb.late, "depth": jb.depth,
            "jitter_ms": 1000 * jb.jitter}


def _sequence(payload: bytes, arrived: dict[int, float]) -> int:
    """The sequence number of a played payload (its byte is the number's low 8 bits): the
    most recent arrival with that byte."""
    return max(s for s in arrived if s & 0xFF == payload[0])


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    results: dict[str, dict[str, list[dict]]] = {n: {"fixed": [], "adaptive": []}
                                                for n in NETWORKS}
    for run in range(args.runs):
        for network, spread in NETWORKS.items():
            for mode in ("fixed", "adaptive"):
                results[network][mode].append(
                    await one_run(mode == "adaptive", spread, args.seconds, seed=run))
    figures, lines = {}, [f"{'network':18} {'buffer':9} {'wait ms':>8} {'underruns':>9} "
                          f"{'lost':>5} {'skipped':>7} {'depth':>5}"]
    for network, modes in results.items():
        for mode, runs in modes.items():
            row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            figures[f"{network}/{mode}"] = row
            lines.append(f"{network:18} {mode:9} {row['wait_ms']:8.1f} {row['underruns']:9.0f} "
                         f"{row['lost']:5.0f} {row['skipped']:7.0f} {row['depth']:5.0f}")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
