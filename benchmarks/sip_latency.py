"""Voice-to-voice and barge-in latency as a phone caller hears them, over SIP and RTP on
loopback.

    python benchmarks/sip_latency.py [--agent examples/basic_agent.py] [--data DIR]
        [--clips NAME ...] [--runs 3] [--jitter adaptive fixed] [--json]

An in-process ``voiceagent sip`` bridge answers a caller made of a UDP socket for SIP and one
for RTP: it sends INVITE (PCMU), then each clip as 8 kHz mu-law in 20 ms packets paced in
real time, followed by silence, ``--runs`` times in one call, and records when every packet
of the agent's voice arrives. A turn's latency is from the caller's last packet of speech
(the last 20 ms frame within 35 dB of the clip's loudest) to the first agent packet above
-40 dBFS, so it includes
G.711 both ways, the bridge's jitter buffer and 20 ms packetisation on top of the server's own
figure (end of speech to first audio played), reported beside it.

``--jitter adaptive fixed`` measures the voice-to-voice turns with each jitter buffer (the
adaptive default and a fixed 3 packets), clip by clip in turn, so the two are compared inside
one run.

Barge-in: for each clip, a call whose agent greets the caller at length; 1 s into the greeting
the caller speaks the clip over it. Latency from the caller's first packet of speech to the
agent's audio going quiet at the caller (the first agent packet starting 0.4 s below -45
dBFS); and, on the session's clock, from the VAD's speech onset to the interruption being
confirmed (its ``barge_in`` event).
"""

from __future__ import annotations

import asyncio
import copy
import socket
import uuid

import numpy as np
from common import agent_benchmark, emit, median, ms

from voiceagent.audio import load_audio, resample
from voiceagent.events import Event
from voiceagent.telephony.media import FRAME_SAMPLES, PCMU, TELEPHONE_RATE
from voiceagent.telephony.rtp import RtpPacket
from voiceagent.telephony.sip_message import SipMessage, new_branch, new_tag, parse
from voiceagent.telephony.sip_server import SipOptions, SipServer

TAIL = 8.0  # seconds of silence after each clip: time for the agent's answer
LOUD_DBFS = -40.0  # the agent's voice (Piper speaks at a steady level)
QUIET_DBFS = -45.0  # the agent has stopped
GREETING = ("Hello and thank you for calling. This greeting goes on for a while on purpose, "
            "so that the caller has something to talk over, the way people do on the phone.")
SPEECH_RANGE_DB = 35.0  # the caller's speech: recordings differ in level


def frame_dbfs(samples: np.ndarray) -> float:
    return 20 * np.log10(float(np.sqrt(np.mean(samples ** 2))) + 1e-9)


class Caller:
    """Just enough of a SIP caller to place one call and time the audio both ways."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.sip, self.rtp):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        self.call_id, self.tag = uuid.uuid4().hex, new_tag()
        self.to = "<sip:agent@127.0.0.1>"
        self.routes: list[str] = []  # a proxy's Record-Route (Kamailio): the dialog's path
        self.remote_rtp: tuple[str, int] | None = None
        self.heard: list[tuple[float, float]] = []  # (arrival, dBFS) per agent packet

    def _request(self, method: str, cseq: int, body: str = "") -> SipMessage:
        msg = SipMessage(method=method, uri=f"sip:agent@{self.server[0]}:{self.server[1]}")
        port = self.sip.getsockname()[1]
        msg.add("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()};rport")
        for route in self.routes:
            msg.add("Route", route)
        msg.add("From", f"<sip:bench@127.0.0.1>;tag={self.tag}")
        msg.add("To", self.to)
        msg.add("Call-ID", self.call_id)
        msg.add("CSeq", f"{cseq} {method}")
        msg.add("Contact", f"<sip:bench@127.0.0.1:{port}>")
        if body:
            msg.add("Content-Type", "application/sdp")
            msg.body = body.encode()
        return msg

    async def _final(self) -> SipMessage:
        loop = asyncio.get_running_loop()
        while True:
            msg = parse(await asyncio.wait_for(loop.sock_recv(self.sip, 65535), 10))
            if msg.status >= 200:
                return msg

    async def dial(self) -> None:
        loop = asyncio.get_running_loop()
        port = self.rtp.getsockname()[1]
        offer = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 f"m=audio {port} RTP/AVP 0\r\n")
        await loop.sock_sendto(self.sip, self._request("INVITE", 1, offer).encode(),
                               self.server)
        ok = await self._final()
        if ok.status != 200:
            raise RuntimeError(f"call refused: {ok.status} {ok.reason}")
        self.to = ok.get("to") or self.to
        self.routes = list(reversed(ok.get_all("record-route")))  # the caller's order
        media = next(line for line in ok.body.decode().splitlines() if line.startswith("m="))
        self.remote_rtp = ("127.0.0.1", int(media.split()[1]))
        await loop.sock_sendto(self.sip, self._request("ACK", 1).encode(), self.server)

    async def hang_up(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sip, self._request("BYE", 2).encode(), self.server)
        await self._final()
        self.sip.close()
        self.rtp.close()

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.rtp, 2048)
            samples = PCMU.decode(RtpPacket.decode(data).payload)
            self.heard.append((loop.time(), frame_dbfs(samples)))

    async def turns(self, turn: np.ndarray, runs: int) -> list[float]:
        """Say ``turn`` (a clip and TAIL seconds of silence) ``runs`` times; the latency of
        every turn answered within its silence, from the clip's last loud frame to the first
        loud packet of the agent's voice."""
        loud = await self.talk(np.concatenate([turn] * runs))
        cycle = len(turn) / TELEPHONE_RATE
        measured = []
        for k in range(runs):
            # the clip's speech within this repetition: its last loud frame
            spoken = [t for t in loud if loud[0] + k * cycle - 1 <= t < loud[0] + (k + 1) * cycle
                      - TAIL]
            if not spoken:
                continue
            end = spoken[-1]
            reply = next((t for t, db in self.heard if t > end and db > LOUD_DBFS), None)
            if reply is not None and reply < end + TAIL:
                measured.append(reply - end)
        return measured

    async def talk(self, audio_8k: np.ndarray) -> list[float]:
        """Send the audio in real time; returns the send time of every speech frame."""
        loop = asyncio.get_running_loop()
        assert self.remote_rtp is not None
        frames = [audio_8k[i:i + FRAME_SAMPLES]
                  for i in range(0, len(audio_8k) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
        levels = [frame_dbfs(f) for f in frames]
        threshold = max(levels) - SPEECH_RANGE_DB
        loud, start = [], loop.time()
        for seq, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, start + seq * 0.02 - loop.time()))
            packet = RtpPacket(PCMU.payload_type, seq, seq * FRAME_SAMPLES, 1234,
                               PCMU.encode(frame))
            await loop.sock_sendto(self.rtp, packet.encode(), self.remote_rtp)
            if levels[seq] > threshold:
                loud.append(loop.time())
        return loud


async def measure_clip(server: SipServer, clip, runs: int, server_v2v: list) -> dict:
    audio = resample(load_audio(clip.path), 16_000, TELEPHONE_RATE)
    turn = np.concatenate([audio, np.zeros(int(TAIL * TELEPHONE_RATE), np.float32)])
    caller = Caller(server.address)
    await caller.dial()
    listener = asyncio.ensure_future(caller.listen())
    first_metric = len(server_v2v)
    try:
        measured = await caller.turns(turn, runs)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await caller.hang_up()
    server_side = server_v2v[first_metric:]
    return {"clip": clip.name, "turns": len(measured), "caller": median(measured),
            "server": median(server_side), "latencies": [round(v, 3) for v in measured]}


async def measure_barge_in(server: SipServer, clip, runs: int, events: list[Event]) -> dict:
    audio = resample(load_audio(clip.path), 16_000, TELEPHONE_RATE)
    talk = np.concatenate([np.zeros(TELEPHONE_RATE, np.float32), audio])  # 1 s of greeting
    silent, confirmed = [], []
    for _ in range(runs):
        caller = Caller(server.address)
        first_event = len(events)
        await caller.dial()
        listener = asyncio.ensure_future(caller.listen())
        try:
            loud = await caller.talk(talk)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await caller.hang_up()
        onset = loud[0]
        heard = [(t, db) for t, db in caller.heard if t > onset - 0.1]
        quiet_from = next((t for i, (t, _) in enumerate(heard)
                           if all(db < QUIET_DBFS for _, db in heard[i:i + 20])), None)
        if quiet_from is not None:
            silent.append(quiet_from - onset)
        call = events[first_event:]
        spoken = [e.ts for e in call if e.type == "user_speaking" and e.speaking]  # type: ignore[attr-defined]
        cut = [e.ts for e in call if e.type == "barge_in" and e.action == "interrupted"]  # type: ignore[attr-defined]
        if spoken and cut:
            confirmed.append(cut[0] - spoken[0])  # on the session's clock, from the VAD's onset
    return {"clip": clip.name, "runs": len(silent), "onset_to_silent": median(silent),
            "onset_to_confirmed": median(confirmed),
            "silent": [round(v, 3) for v in silent]}


def _jitter_argument(p) -> None:
    p.add_argument("--jitter", nargs="+", choices=("adaptive", "fixed"), default=["adaptive"],
                   help="the SIP jitter buffer(s) to measure turns with, in turn")


async def main() -> None:
    args, selected, agent, backends = agent_benchmark(__doc__, extra=_jitter_argument)
    server_v2v: list[float] = []

    def on_event(event: Event) -> None:
        if event.type == "metrics" and event.metrics.voice_to_voice is not None:  # type: ignore[attr-defined]
            server_v2v.append(event.metrics.voice_to_voice)  # type: ignore[attr-defined]

    servers = {mode: SipServer(agent, backends,
                               SipOptions(port=0, adaptive_jitter=mode == "adaptive"),
                               subscribers=[on_event]) for mode in args.jitter}
    greeter = copy.copy(agent)
    greeter.greeting = GREETING
    events: list[Event] = []
    barging = SipServer(greeter, backends, SipOptions(port=0), subscribers=[events.append])
    for server in (*servers.values(), barging):
        await server.start()
    try:
        per_clip = {mode: [] for mode in servers}
        for clip in selected:  # the modes in turn, clip by clip
            for mode, server in servers.items():
                per_clip[mode].append(await measure_clip(server, clip, args.runs, server_v2v))
        barge_in = [await measure_barge_in(barging, clip, args.runs, events)
                    for clip in selected]
    finally:
        for server in (*servers.values(), barging):
            await server.close()
    silent_all = [v for b in barge_in for v in b["silent"]]
    figures: dict = {"runs": args.runs, "median_barge_in_silent": median(silent_all),
                     "barge_in": barge_in, "jitter": {}}
    lines = []
    for mode, clips in per_clip.items():
        every = [v for c in clips for v in c["latencies"]]
        server_side = [c["server"] for c in clips if c["server"] is not None]
        figures["jitter"][mode] = {"turns": len(every), "median_caller": median(every),
                                   "median_server": median(server_side), "clips": clips}
        lines += [f"{mode} jitter buffer", f"{'clip (median ms)':48} {'turns':>5} {'caller':>7} "
                                           f"{'server':>7}"]
        lines += [f"{c['clip']:48} {c['turns']:5d} {ms(c['caller'])} {ms(c['server'])}"
                  for c in clips]
        lines.append(f"{'all':48} {len(every):5d} {ms(median(every))} "
                     f"{ms(median(server_side))}")
    lines += ["", f"{'barge-in over the greeting (median ms)':48} {'runs':>5} {'silent':>7} "
                  f"{'confirm':>7}"]
    lines += [f"{b['clip']:48} {b['runs']:5d} {ms(b['onset_to_silent'])} "
              f"{ms(b['onset_to_confirmed'])}" for b in barge_in]
    lines.append(f"{'all':48} {len(silent_all):5d} {ms(figures['median_barge_in_silent'])}")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
