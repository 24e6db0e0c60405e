"""Fuzzing the SIP bridge's dialog handling: sequences of valid and mutated requests (INVITE,
ACK, INFO, re-INVITE, BYE, CANCEL, OPTIONS, methods it does not serve, stray responses, raw
bytes) go into a real :class:`SipServer` on loopback, from a caller socket that answers the
bridge's BYEs. After every sequence the bridge still answers OPTIONS, holds no more calls
than allowed, logs no error, and once closed leaves no task behind.

Each example gets a fresh bridge; in-dialog requests carry the To tag of the bridge's last
200 OK, so valid sequences reach the calls' own handling before the mutations do.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from fuzzing import SIP_OFFER, fuzz_settings, mutated_lines, sip_lines, tried
from hypothesis import event, given
from hypothesis import strategies as st

from voiceagent import Agent
from voiceagent.agent import AgentOptions, EndpointingOptions
from voiceagent.telephony.sip_message import SipMessage, SipParseError, parse, response, tag_of
from voiceagent.telephony.sip_server import SipOptions, SipServer
from voiceagent.testing import LoudnessVAD, ScriptedLLM, ScriptedSTT, ToneTTS

AGENT = Agent("You answer briefly.", options=AgentOptions(
    endpointing=EndpointingOptions(mode="vad")))
KINDS = ["INVITE", "ACK", "INFO", "re-INVITE", "BYE", "CANCEL", "OPTIONS", "REGISTER",
         "SUBSCRIBE", "response", "raw"]


class Caller(asyncio.DatagramProtocol):
    """The other end: keeps the bridge's responses, answers its requests (BYE) with 200."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: list[SipMessage] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        msg = parse(data)  # the bridge's messages must parse: a SipParseError fails the test
        if msg.is_request:
            assert self.transport is not None
            self.transport.sendto(response(msg, 200).encode(), addr)
        else:
            self.responses.append(msg)

    def to_tag(self) -> str:
        """The tag of the last answered INVITE: what in-dialog requests must carry."""
        return next((tag_of(r.get("to") or "") for r in reversed(self.responses)
                     if r.status == 200 and r.cseq[1] == "INVITE"), "")


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def datagram(data: st.DataObject, step: int, to_tag: str, offer: str) -> bytes:
    """Half the sequences open with a valid INVITE, so that the rest finds a call."""
    if step == 1 and data.draw(st.booleans()):
        tried("SIP dialog datagram: valid INVITE")
        return "\r\n".join(sip_lines("INVITE", call_id="fuzz-call", branch="z9hG4bK-1",
                                      body=offer)).encode()
    kind = data.draw(st.sampled_from(KINDS))
    if kind == "raw":
        tried("SIP dialog datagram: raw bytes")
        return data.draw(st.binary(max_size=600))
    method = {"re-INVITE": "INVITE", "response": "OPTIONS"}.get(kind, kind)
    in_dialog = kind not in ("INVITE", "OPTIONS", "REGISTER", "SUBSCRIBE")
    body = {"INFO": "Signal=5\r\nDuration=160\r\n", "INVITE": offer}.get(method)
    lines = sip_lines(method, call_id="fuzz-call", branch=f"z9hG4bK-{step}", cseq=step,
                      to_tag=to_tag if in_dialog else "", body=body)
    if kind == "response":
        lines[0] = "SIP/2.0 200 OK"
    if data.draw(st.booleans()):
        tried(f"SIP dialog datagram: valid {kind}")
        return "\r\n".join(lines).encode()
    tried(f"SIP dialog datagram: mutated {kind}")
    return "\r\n".join(data.draw(mutated_lines(lines, f"dialog: {kind} mutated"))).encode(
        "utf-8", "surrogatepass")


async def run_sequence(data: st.DataObject) -> None:
    backends = {"vad": LoudnessVAD(), "stt": ScriptedSTT("hello"), "llm": ScriptedLLM(),
                "tts": ToneTTS()}
    server = SipServer(AGENT, backends, SipOptions(port=0, max_calls=1))
    await server.start()
    loop = asyncio.get_running_loop()
    transport, caller = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    me = transport.get_extra_info("sockname")[:2]
    # The calls' RTP goes to a socket of ours, not to a port some other program may use.
    rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                 local_addr=("127.0.0.1", 0))
    offer = SIP_OFFER.replace("6000", str(rtp.get_extra_info("sockname")[1]))
    errors = ErrorLog()
    logging.getLogger("voiceagent").addHandler(errors)
    try:
        for step in range(1, data.draw(st.integers(1, 6)) + 1):
            try:
                server.datagram_received(datagram(data, step, caller.to_tag(), offer), me)
            except SipParseError:
                raise AssertionError("a parse error escaped the bridge") from None
            await asyncio.sleep(0.01)  # the answer's task: an RTP socket, the session
            assert len(server.calls) <= 1
            if server.calls:
                event("dialog: a call in progress")
        options = "\r\n".join(sip_lines("OPTIONS", call_id="probe", branch="z9hG4bK-probe"))
        transport.sendto(options.encode(), server.address)
        # 200, or 503 while a fuzzed INVITE holds the one call slot
        for _ in range(500):
            if any(r.call_id == "probe" and r.status in (200, 503) for r in caller.responses):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the bridge stopped answering OPTIONS")
    finally:
        await server.close()
        transport.close()
        rtp.close()
        logging.getLogger("voiceagent").removeHandler(errors)
    assert not server.calls
    assert not errors.records, [r.getMessage() for r in errors.records]


@fuzz_settings(100)
@given(st.data())
def test_fuzzed_dialogs_leave_the_bridge_answering_and_leak_nothing(loop, data):
    tried("SIP dialog: sequences of 1-6 datagrams into a fresh bridge")
    threads = threading.active_count()
    loop.run_until_complete(run_sequence(data))
    left = loop.run_until_complete(_settled())
    assert not left, left
    assert threading.active_count() <= threads


async def _settled(timeout: float = 5.0) -> list[str]:
    me = asyncio.current_task()
    for _ in range(int(timeout / 0.02)):
        left = [t.get_name() for t in asyncio.all_tasks() if t is not me]
        if not left:
            break
        await asyncio.sleep(0.02)
    return left
