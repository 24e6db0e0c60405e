"""The engine of ``voiceagent sip``: load the agent and its models once, then answer calls
until stopped. SIGTERM drains (no new calls; those in progress may finish within the drain
deadline, then get a BYE); Ctrl-C, or a second SIGTERM, hangs up every call at once."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable

from pydantic import ValidationError

from .. import registry
from ..errors import ConfigError
from ..events import Event, JsonlEventWriter
from ..loader import apply_backend_overrides, load_agent
from ..race import race
from ..ratelimit import RateLimitOptions
from ..observability import observe_calls, serve_metrics
from ..session import resolve_backends
from .sip_admission import InboundAuth
from .sip_register import RegistrationOptions
from .sip_server import SipOptions, SipServer


def sip_options(args: argparse.Namespace) -> SipOptions:
    registration = None
    if args.register:
        user, at, registrar = args.register.partition("@")
        if not at or not user or not registrar:
            raise ConfigError("--register must look like USER@REGISTRAR[:PORT]")
        registration = RegistrationOptions(
            registrar=registrar, username=user, domain=args.domain,
            auth_username=args.auth_user,
            password=os.environ.get("VOICEAGENT_SIP_PASSWORD", ""), expires=args.expires)
    inbound_auth = None
    if args.inbound_user:
        password = os.environ.get("VOICEAGENT_SIP_INBOUND_PASSWORD", "")
        if not password:
            raise ConfigError("--inbound-user needs the password in "
                              "$VOICEAGENT_SIP_INBOUND_PASSWORD")
        inbound_auth = InboundAuth(username=args.inbound_user, password=password,
                                   realm=args.realm)
    rate_limit = (RateLimitOptions(per_minute=args.rate_limit, burst=args.rate_burst)
                  if args.rate_limit > 0 else None)
    try:
        return SipOptions(host=args.host, port=args.port, public_address=args.public_address,
                          max_calls=args.max_calls, input_timeout=args.input_timeout,
                          latch_rtp=args.latch_rtp, jitter_packets=args.jitter_packets,
                          adaptive_jitter=not args.fixed_jitter, registration=registration,
                          allow_from=args.allow_from, inbound_auth=inbound_auth,
                          rate_limit=rate_limit, ack_timeout=args.ack_timeout,
                          drain_timeout=args.drain_timeout)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"bad SIP options: {problems}") from exc


async def serve_sip(args: argparse.Namespace) -> int:
    agent = load_agent(args.agent)
    apply_backend_overrides(agent, args)
    options = sip_options(args)
    observability = observe_calls(agent, args, metrics=args.metrics_port is not None)
    backends = resolve_backends(agent)  # every model loaded before the first call
    writer = JsonlEventWriter(args.events) if args.events else None
    subscribers: list[Callable[[Event], object]] = [writer] if writer else []
    server = SipServer(agent, backends, options, subscribers=subscribers)
    stop, drain = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # SIGTERM drains; a second one (or Ctrl-C) hangs up at once
    loop.add_signal_handler(signal.SIGTERM, lambda: (stop if drain.is_set() else drain).set())
    try:
        if args.metrics_port is not None:
            serve_metrics(observability, args.host, args.metrics_port)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port} (UDP): {exc}") from exc
        host, port = server.address
        print(f"voiceagent: answering SIP calls for {args.agent} on {host}:{port} (UDP)",
              flush=True)
        await race(stop.wait(), drain.wait())
        if drain.is_set() and not stop.is_set():
            print(f"voiceagent: draining: no new calls; {len(server.calls)} in progress get "
                  f"up to {options.drain_timeout:g} s", flush=True)
            await race(server.drain(), stop.wait())
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close()
        await registry.aclose(backends.values())
        if writer:
            writer.close()
        observability.close()
    return 0
