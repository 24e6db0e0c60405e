"""``voiceagent`` command line.

    voiceagent run AGENT.py --input user.wav --output agent.wav --events events.jsonl
    voiceagent serve AGENT.py --port 8080       (then open http://127.0.0.1:8080/)
    voiceagent sip AGENT.py --port 5060         (then call sip:agent@127.0.0.1:5060)
    voiceagent eval AGENT.py SCENARIOS.yaml [--json]   (scenario tests; exit 1 on a failure)

Errors a user can fix (a bad file, a missing package, a bad option) print one line and exit
with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .errors import VoiceAgentError
from .loader import add_backend_flags
from .observability import add_observability_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voiceagent", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="talk to an agent with an audio file as the microphone")
    run.add_argument("agent", help="the agent entrypoint file (e.g. examples/basic_agent.py)")
    run.add_argument("--input", required=True, help="the user's audio: any WAV/FLAC/OGG")
    run.add_argument("--output", help="write what the user hears here (WAV, 16 kHz)")
    run.add_argument("--events", help="append the session's events here (JSONL)")
    pace = run.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0,
                      help="play the input this many times faster than real time (default 1)")
    pace.add_argument("--fast", action="store_const", const=4.0, dest="speed",
                      help="same as --speed 4")
    run.add_argument("--max-tail", type=float, default=60.0,
                     help="seconds to keep listening after the input ends (default 60)")
    run.add_argument("-q", "--quiet", action="store_true", help="print no transcript")
    add_observability_flags(run)
    add_backend_flags(run)

    serve = sub.add_parser("serve", help="talk to an agent from a browser (WebRTC) or a phone "
                                         "(Twilio Media Streams)")
    serve.add_argument("agent", help="the agent entrypoint file (e.g. examples/basic_agent.py)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                       "127.0.0.1; browsers allow the microphone only there or over HTTPS)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--ice-server", action="append", metavar="URL",
                       help="a STUN/TURN server: stun:HOST:PORT or turn:USER:PASS@HOST:PORT "
                            "(repeatable)")
    serve.add_argument("--ice-host-address", action="append", metavar="ADDR",
                       help="offer ICE host candidates only on this address (repeatable; "
                            "default: every non-loopback interface)")
    serve.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on offers (and "
                       "the token parameter on media streams)")
    serve.add_argument("--public-url", metavar="URL",
                       help="the server's public https:// URL, for the media-stream address "
                            "in TwiML (default: from the request's Host header)")
    serve.add_argument("--max-sessions", type=int, default=4, metavar="N",
                       help="concurrent conversations allowed (default 4)")
    serve.add_argument("--input-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="end a browser's session when its microphone sends no audio this "
                            "long (default 5)")
    serve.add_argument("--rate-limit", type=float, default=60.0, metavar="PER_MINUTE",
                       help="new sessions (offers, media streams) allowed per client address "
                            "per minute after the burst; 0 turns the limit off (default 60)")
    serve.add_argument("--rate-burst", type=int, default=20, metavar="N",
                       help="new sessions a client address may open at once (default 20)")
    serve.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                       help="a reverse proxy's address or network (10.0.0.0/8) whose "
                            "X-Forwarded-For names the client, for the rate limit (repeatable)")
    serve.add_argument("--drain-timeout", type=float, default=20.0, metavar="SECONDS",
                       help="on SIGTERM, take no new sessions (/health and offers answer 503) "
                            "and let those in progress go on this long before ending them "
                            "(default 20)")
    serve.add_argument("--events", help="append every session's events here (JSONL)")
    add_observability_flags(serve, metrics="route")
    add_backend_flags(serve)

    sip = sub.add_parser("sip", help="answer phone calls: a SIP user agent over UDP")
    sip.add_argument("agent", help="the agent entrypoint file (e.g. examples/basic_agent.py)")
    sip.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 for every one)")
    sip.add_argument("--port", type=int, default=5060, help="UDP port (default 5060)")
    sip.add_argument("--public-address", metavar="ADDR",
                     help="the address callers reach us at, for Contact and SDP (default: "
                          "--host, or the interface that routes to the caller)")
    sip.add_argument("--max-calls", type=int, default=4, metavar="N",
                     help="concurrent calls; more get 486 Busy Here (default 4)")
    sip.add_argument("--input-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="hang up when the caller sends no RTP or RTCP this long (default 30)")
    sip.add_argument("--allow-from", action="append", default=[], metavar="NETWORK",
                     help="take INVITEs only from this address or network (e.g. "
                          "10.0.0.0/8; repeat for more); others get 403 (default: anyone)")
    sip.add_argument("--inbound-user", metavar="USER",
                     help="challenge INVITEs for this user name (digest); the password is "
                          "read from $VOICEAGENT_SIP_INBOUND_PASSWORD")
    sip.add_argument("--realm", default="voiceagent",
                     help="digest realm of that challenge (default voiceagent)")
    sip.add_argument("--rate-limit", type=float, default=30.0, metavar="PER_MINUTE",
                     help="new calls per source address and minute, beyond a burst; more "
                          "get 503 with Retry-After (default 30; 0: no limit)")
    sip.add_argument("--rate-burst", type=int, default=10, metavar="N",
                     help="calls a source may start at once before the rate applies "
                          "(default 10)")
    sip.add_argument("--ack-timeout", type=float, default=32.0, metavar="SECONDS",
                     help="end a call whose 200 OK is not acknowledged this long (default "
                          "and most 32, Timer H)")
    sip.add_argument("--drain-timeout", type=float, default=20.0, metavar="SECONDS",
                     help="on SIGTERM, take no new calls and let those in progress go on this "
                          "long before hanging them up (default 20)")
    sip.add_argument("--jitter-packets", type=int, default=3, metavar="N",
                     help="20 ms packets the caller's jitter buffer holds before playing "
                          "(default 3; where it starts when adaptive)")
    sip.add_argument("--fixed-jitter", action="store_true",
                     help="keep the jitter buffer at --jitter-packets instead of following "
                          "the network's measured jitter")
    sip.add_argument("--latch-rtp", action="store_true",
                     help="take RTP from wherever the caller's first packet comes from "
                          "(callers behind a NAT)")
    sip.add_argument("--register", metavar="USER@REGISTRAR[:PORT]",
                     help="register with a SIP registrar (a PBX, a trunk); the password is "
                          "read from $VOICEAGENT_SIP_PASSWORD")
    sip.add_argument("--domain", help="domain of the registered address (default: the "
                                      "registrar's host)")
    sip.add_argument("--auth-user", help="user name for digest authentication, if not USER")
    sip.add_argument("--expires", type=int, default=300,
                     help="registration lifetime asked for, in seconds (default 300)")
    sip.add_argument("--events", help="append every call's events here (JSONL)")
    add_observability_flags(sip, metrics="port")
    add_backend_flags(sip)

    ev = sub.add_parser("eval", help="run scenario tests (YAML) against an agent; exit status "
                                     "1 when one fails (docs/testing.md)")
    ev.add_argument("agent", help="the agent entrypoint file")
    ev.add_argument("scenarios", help="a YAML list of scenarios (name, turns)")
    ev.add_argument("--json", action="store_true",
                    help="print one JSON object instead of the table")
    ev.add_argument("--turn-timeout", type=float, default=120.0, metavar="SECONDS",
                    help="longest wait for one turn's answer (default 120)")
    add_backend_flags(ev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            from .runner import run_file

            return asyncio.run(run_file(args))
        if args.command == "serve":
            from .deps import require

            for module, package in (("aiortc", "aiortc"), ("starlette", "starlette"),
                                    ("uvicorn", "uvicorn")):
                require(module, package, "webrtc")
            from .server.serve import serve

            return serve(args)
        if args.command == "sip":
            from .telephony.serve_sip import serve_sip

            return asyncio.run(serve_sip(args))
        if args.command == "eval":
            from .testing.scenarios import eval_file

            return asyncio.run(eval_file(args))
    except VoiceAgentError as exc:
        print(f"voiceagent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
