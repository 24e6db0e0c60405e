"""Real SIP phones for the telephony tests: sipp and baresip, against a server on 127.0.0.1.

Why real peers: our SIP stack is written from the RFCs, and a stack tested only against itself
agrees with itself. sipp sends exactly the messages a scenario spells out (and RTP replayed
from a pcap), so it pins down the protocol edge cases; baresip is a complete softphone with
its own SIP, SDP and RTP code, so a call with it shows the whole path interoperates.

Quirks these helpers work around (sipp 3.6.1, baresip 1.0.0, as packaged by Debian):

* sipp's ``play_pcap_audio`` sends through a raw socket (root or CAP_NET_RAW), from
  ``-mi``:``-mp``, rewriting only the UDP ports, and resolves the pcap against the
  scenario's folder, at load time: each call gets a temp folder with ``scenario.xml`` and
  ``call.pcap``. The play runs beside the scenario, so the scenario's ``<pause/>`` (``-d``)
  must cover it. sipp binds ``-mp`` and ``-mp``+2, and a control socket (``-ci``/``-cp``,
  else 0.0.0.0:8888).
* baresip's ``aufile`` is a source only and needs 8 kHz mono S16 for G.711; at the end of
  the file it closes the call ("audio error"), so the input is padded with silence. No player
  module is loaded (no audio hardware is touched); what the caller heard is the ``sndfile``
  filter's decoder dump: the frames as they arrived, back to back (a gap in the RTP is not
  silence in it). ``net_interface 127.0.0.1`` (``lo`` fails) puts 127.0.0.1 in its Contact
  and SDP, so all traffic stays on loopback, though its RTP/RTCP and DNS sockets still bind
  0.0.0.0 (RTP within ``rtp_ports``, kept clear of free_port's range). SIP binds UDP and TCP
  on the port and TCP on port+1. Commands are typed on stdin, as on its console.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from voiceagent.audio import load_audio, write_wav
from voiceagent.telephony.g711 import encode_alaw, encode_ulaw

SIPP = shutil.which("sipp")
BARESIP = shutil.which("baresip")
SCENARIOS = Path(__file__).resolve().parent / "sipp"
UAC_UNSUPPORTED_CODEC = SCENARIOS / "uac_unsupported_codec.xml"  # G.722 only; expects 488
LOOPBACK = "127.0.0.1"
BARESIP_MODULES = "/usr/lib/baresip/modules"


def free_port() -> int:
    """A port below Linux's ephemeral range with ``port..port+3`` free for UDP and TCP on
    loopback: room for sipp's media (+2) and baresip's second SIP listener (+1)."""
    for _ in range(200):
        port = random.randrange(20000, 32000, 4)
        try:
            for offset in range(4):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((LOOPBACK, port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


# --- RTP in a pcap, for sipp to replay ---------------------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(samples_8k: np.ndarray, path: str | Path, *, payload_type: int = 0,
                   src: tuple[str, int] = (LOOPBACK, 6000),
                   dst: tuple[str, int] = (LOOPBACK, 6002), ssrc: int = 0x5EED0711) -> Path:
    """The audio as G.711 RTP (20 ms, 160 samples a packet) in a libpcap file of Ethernet
    frames, 20 ms apart. sipp replaces the addresses and ports with the call's own."""
    if payload_type not in (0, 8):
        raise ValueError("payload_type must be 0 (PCMU) or 8 (PCMA)")
    samples = np.asarray(samples_8k, np.float32).reshape(-1)
    samples = np.pad(samples, (0, -len(samples) % 160))
    payload = (encode_ulaw if payload_type == 0 else encode_alaw)(samples)
    src_ip, dst_ip = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # 1: Ethernet
    for i in range(len(payload) // 160):
        rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if i == 0 else 0), i & 0xFFFF,
                          i * 160, ssrc) + payload[i * 160:(i + 1) * 160]
        length = 8 + len(rtp)
        udp = struct.pack("!HHHH", src[1], dst[1], length, 0)
        udp_sum = _checksum(src_ip + dst_ip + struct.pack("!BBH", 0, 17, length) + udp + rtp)
        udp = udp[:6] + struct.pack("!H", udp_sum or 0xFFFF)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, i & 0xFFFF, 0x4000, 64, 17, 0,
                         src_ip, dst_ip)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp + rtp
        usec = i * 20_000
        records.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame),
                                   len(frame)) + frame)
    path = Path(path)
    path.write_bytes(b"".join(records))
    return path


def pcap_duration(path: str | Path) -> float:
    """Seconds from the first packet of a (little-endian, microsecond) pcap to the end of
    the last, taking the last to last as long as the gap before it (20 ms if alone)."""
    data = Path(path).read_bytes()
    stamps, offset = [], 24
    while offset + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, offset)
        stamps.append(sec + usec / 1e6)
        offset += 16 + caplen
    if not stamps:
        return 0.0
    last_gap = stamps[-1] - stamps[-2] if len(stamps) > 1 else 0.02
    return stamps[-1] - stamps[0] + last_gap


# --- processes ------------------------------------------------------------------------

async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill the process if it still runs, and reap it, whatever happened to the caller."""
    if proc.returncode is None:
        with suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


async def _wait_bound(port: int, task: asyncio.Task, timeout: float = 5.0) -> None:
    """Until something listens on loopback UDP ``port`` (read from /proc, as a probe bind
    could steal the port from the process starting up) or ``task`` ends."""
    needle = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not task.done():
        try:
            table = Path("/proc/net/udp").read_text()
        except OSError:
            await asyncio.sleep(0.3)
            return
        if any(line.split()[1] == needle for line in table.splitlines()[1:]):
            return
        await asyncio.sleep(0.02)


# --- sipp ---------------------------------------------------------------------------

@dataclass
class SippResult:
    returncode: int  # 0: as scripted; 1: failed; 255: fatal or -timeout; 254: bind; -9: hung
    messages: str  # the SIP messages sent and received (-trace_msg)
    errors: str  # unexpected messages and aborted calls (-trace_err)
    output: str  # sipp's screens and stderr
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def _start_lines(self, direction: str) -> list[str]:
        blocks = re.split(r"^-{20,} .*$", self.messages, flags=re.M)
        return [b.strip().split("\n\n", 1)[1].splitlines()[0].strip() for b in blocks
                if b.strip().startswith(f"UDP message {direction}") and "\n\n" in b.strip()]

    @property
    def received(self) -> list[str]:
        """Start lines of the messages sipp received, e.g. ``"SIP/2.0 488 Not Acceptable"``."""
        return self._start_lines("received")

    @property
    def sent(self) -> list[str]:
        return self._start_lines("sent")


async def _run_sipp(scenario: Path, pcap: Path | None, args: list[str],
                    timeout: float) -> SippResult:
    if SIPP is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester)")
    with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
        work = Path(tmp)
        shutil.copyfile(scenario, work / "scenario.xml")
        if pcap is not None:
            shutil.copyfile(pcap, work / "call.pcap")
        argv = [SIPP, "-sf", str(work / "scenario.xml"), "-m", "1", "-nostdin", "-aa",
                "-ci", LOOPBACK, "-cp", str(free_port()),
                "-trace_msg", "-message_file", str(work / "messages.log"),
                "-trace_err", "-error_file", str(work / "errors.log"),
                "-timeout", f"{max(1, round(timeout))}s", "-timeout_error", *args]
        started = time.monotonic()
        with open(work / "output.log", "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=work, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT)
            try:
                returncode = await asyncio.wait_for(proc.wait(), timeout + 10)
            except TimeoutError:
                returncode = -9
            finally:
                await _stop(proc)

        def text(name: str) -> str:
            file = work / name
            return file.read_text(errors="replace") if file.exists() else ""

        return SippResult(returncode, text("messages.log"), text("errors.log"),
                          text("output.log"), time.monotonic() - started)


async def sipp_call(target: str, pcap: str | Path | None = None, *, local_port: int,
                    media_port: int, hangup: Literal["caller", "callee"] = "caller",
                    wait_after: float = 1.0, scenario: str | Path | None = None,
                    service: str = "agent", timeout: float = 60.0,
                    extra_args: Sequence[str] = ()) -> SippResult:
    """One call from sipp (UAC on ``local_port``, RTP from ``media_port``) to ``target``
    ("host:port"): it offers PCMU, PCMA and telephone-event, plays ``pcap`` after the ACK,
    then hangs up ``wait_after`` seconds after the pcap ends (hangup="caller") or waits for
    the server's BYE (hangup="callee"). ``scenario`` replaces the script, e.g.
    ``UAC_UNSUPPORTED_CODEC``; a script that plays audio finds the pcap as ``call.pcap``.
    ``extra_args`` go to sipp as they are (e.g. ``-au``/``-ap`` credentials)."""
    scenario = Path(scenario) if scenario else SCENARIOS / f"uac_{hangup}_bye.xml"
    pcap = Path(pcap) if pcap is not None else None
    if pcap is None and "play_pcap_audio" in scenario.read_text():
        raise ValueError(f"{scenario.name} plays audio: pass a pcap (write_rtp_pcap)")
    pause = (pcap_duration(pcap) if pcap else 0.0) + wait_after
    return await _run_sipp(scenario, pcap, [
        "-i", LOOPBACK, "-p", str(local_port), "-mi", LOOPBACK, "-mp", str(media_port),
        "-s", service, "-d", str(round(pause * 1000)), *extra_args, target], timeout)


@asynccontextmanager
async def sipp_uas(scenario: str | Path = "uas_answer.xml", *, port: int, media_port: int,
                   rtp_echo: bool = False, pause: float = 0.0,
                   timeout: float = 60.0) -> AsyncIterator[asyncio.Task[SippResult]]:
    """A sipp UAS answering one call on loopback ``port`` (a stand-in server for checking
    the harness itself); yields the task that ends with its result. The scenarios in
    tests/sipp: uas_answer (waits for BYE), uas_hangup (sends BYE after ``pause``
    seconds), uas_reject (488). ``rtp_echo`` sends every RTP packet back to its sender."""
    path = Path(scenario) if Path(scenario).is_absolute() else SCENARIOS / scenario
    args = ["-i", LOOPBACK, "-p", str(port), "-mi", LOOPBACK, "-mp", str(media_port),
            "-d", str(round(pause * 1000))] + (["-rtp_echo"] if rtp_echo else [])
    task = asyncio.create_task(_run_sipp(path, None, args, timeout), name=f"sipp-uas-{port}")
    try:
        await _wait_bound(port, task)
        yield task
    finally:
        if not task.done():
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def send_udp(target: str, data: bytes, *, timeout: float = 2.0) -> bytes | None:
    """Send one datagram to ``target`` ("host:port") from a fresh loopback port; the first
    datagram that comes back, or None after ``timeout`` (or if the port is closed)."""
    host, port = target.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[bytes | None] = loop.create_future()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, datagram: bytes, addr: tuple) -> None:
            if not reply.done():
                reply.set_result(datagram)

        def error_received(self, exc: Exception) -> None:  # ICMP port unreachable
            if not reply.done():
                reply.set_result(None)

    transport, _ = await loop.create_datagram_endpoint(
        Receiver, local_addr=(LOOPBACK, 0), remote_addr=(host, int(port)))
    try:
        transport.sendto(data)
        return await asyncio.wait_for(reply, timeout)
    except TimeoutError:
        return None
    finally:
        transport.close()


# --- baresip ----------------------------------------------------------------------

@dataclass
class BaresipResult:
    returncode: int  # 0 after /quit; -9: killed, as it would not quit
    log: str  # baresip's output, without the per-second status line and the typing echo
    established: bool
    hangup_by: Literal["caller", "callee"] | None  # None: the call never got established
    close_reason: str | None  # baresip's "session closed: ..." (a remote BYE or a rejection)
    recording: Path | None  # wav_out (8 kHz mono: what the caller heard), None if no media
    elapsed: float


_STATUS_LINE = re.compile(r"^\[\d+:\d\d:\d\d\] audio=")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _baresip_config(work: Path, local_port: int, wav_in: Path, auth_pass: str | None) -> None:
    (work / "config").write_text(f"""\
poll_method epoll
sip_listen {LOOPBACK}:{local_port}
net_interface {LOOPBACK}
call_local_timeout 30
call_max_calls 1
audio_source aufile,{wav_in}
audio_level no
ausrc_format s16
auplay_format s16
auenc_format s16
audec_format s16
rtp_ports 40000-48000
rtcp_mux no
jitter_buffer_delay 5-10
rtp_stats no
module_path {BARESIP_MODULES}
module stdio.so
module g711.so
module aufile.so
module sndfile.so
module_tmp account.so
module_app menu.so
snd_path {work}
ringback_disabled yes
""")
    auth = f";auth_pass={auth_pass}" if auth_pass else ""
    (work / "accounts").write_text(f"<sip:caller@{LOOPBACK}:{local_port}>{auth};regint=0\n")


async def baresip_call(target_uri: str, wav_in: str | Path, wav_out: str | Path, *,
                       duration: float, local_port: int, hangup_by_caller: bool = True,
                       timeout: float = 60.0, auth_pass: str | None = None) -> BaresipResult:
    """One call from baresip (SIP on loopback ``local_port``) to ``target_uri``, talking
    ``wav_in`` (any rate; sent as 8 kHz G.711) and recording what it hears to ``wav_out``.
    The caller hangs up ``duration`` seconds after the answer unless the server hangs up
    first; with ``hangup_by_caller=False`` it waits for the server to, until ``timeout``
    (counted from the start) runs out. ``auth_pass``: the password baresip answers a
    digest challenge with (user name ``caller``)."""
    if BARESIP is None:
        raise RuntimeError("baresip is not installed")
    started = time.monotonic()
    deadline = started + timeout
    with tempfile.TemporaryDirectory(prefix="baresip-") as tmp:
        work = Path(tmp)
        talk = load_audio(wav_in, 8000)
        padding = max(timeout, duration) + 5.0  # aufile ends the call at the end of its file
        write_wav(work / "talk.wav", np.pad(talk, (0, int(padding * 8000))), 8000)
        _baresip_config(work, local_port, work / "talk.wav", auth_pass)

        lines: list[str] = []
        typed: list[str] = []
        established, closed = asyncio.Event(), asyncio.Event()
        close_reason: list[str] = []

        def on_line(line: str) -> None:
            line = _ANSI.sub("", line).strip()
            echo = line.startswith("/") and any(c.startswith(line) for c in typed)
            if not line or echo or _STATUS_LINE.match(line):
                return
            lines.append(line)
            if "Call established" in line:
                established.set()
            if "session closed:" in line:  # a BYE from the server, or a final answer >= 300
                close_reason.append(line.split("session closed:", 1)[1].strip())
                closed.set()
            if re.search(r"Call with \S+ terminated|^call: terminate call", line):
                closed.set()  # an established call ended, or this side hung up

        async def read(stream: asyncio.StreamReader) -> None:
            pending = ""
            while chunk := await stream.read(4096):
                *done, pending = re.split(r"[\r\n]", pending + chunk.decode(errors="replace"))
                for line in done:
                    on_line(line)
            on_line(pending)

        dial = f"/dial {target_uri}"
        typed.append(dial)
        proc = await asyncio.create_subprocess_exec(
            BARESIP, "-f", str(work), "-e", dial, cwd=work, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        reader = asyncio.create_task(read(proc.stdout))

        async def command(text: str) -> None:
            typed.append(text)
            with suppress(ConnectionError):
                proc.stdin.write(f"{text}\n".encode())
                await proc.stdin.drain()

        async def until(event: asyncio.Event, seconds: float) -> bool:
            waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(closed.wait()),
                     asyncio.ensure_future(proc.wait())]
            try:
                await asyncio.wait(waits, timeout=max(0.0, seconds),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            return event.is_set()

        hangup_by: Literal["caller", "callee"] | None = None
        try:
            if await until(established, deadline - time.monotonic()):
                if hangup_by_caller:
                    await until(closed, min(duration, deadline - time.monotonic()))
                else:
                    await until(closed, deadline - time.monotonic())
                if closed.is_set():
                    hangup_by = "callee" if close_reason else "caller"
                else:
                    hangup_by = "caller"
            if not closed.is_set():  # hang up (or give up ringing), as /quit waits for that
                await command("/hangup")
                await until(closed, 3.0)
            await command("/quit")  # which waits for an unanswered INVITE's transaction
            with suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 3.0 if established.is_set() else 1.0)
        finally:
            await _stop(proc)
            with suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, 2.0)

        recording = None
        dumps = sorted(work.glob("dump-*-dec.wav"))
        if dumps:
            recording = Path(wav_out)
            shutil.copyfile(dumps[-1], recording)
        return BaresipResult(proc.returncode, "\n".join(lines), established.is_set(),
                             hangup_by, close_reason[0] if close_reason else None, recording,
                             time.monotonic() - started)
