"""The engine of ``voiceagent sip``: load the agent and its models once, then answer calls
until interrupted (Ctrl-C or SIGTERM hang up every call with a BYE first)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable

from .. import registry
from ..errors import ConfigError
from ..events import Event, JsonlEventWriter
from ..loader import apply_backend_overrides, load_agent
from ..observability import observe_calls, serve_metrics
from ..session import resolve_backends
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
    return SipOptions(host=args.host, port=args.port, public_address=args.public_address,
                      max_calls=args.max_calls, input_timeout=args.input_timeout,
                      latch_rtp=args.latch_rtp, registration=registration)


async def serve_sip(args: argparse.Namespace) -> int:
    agent = load_agent(args.agent)
    apply_backend_overrides(agent, args)
    options = sip_options(args)
    observability = observe_calls(agent, args, metrics=args.metrics_port is not None)
    backends = resolve_backends(agent)  # every model loaded before the first call
    writer = JsonlEventWriter(args.events) if args.events else None
    subscribers: list[Callable[[Event], object]] = [writer] if writer else []
    server = SipServer(agent, backends, options, subscribers=subscribers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close()
        await registry.aclose(backends.values())
        if writer:
            writer.close()
        observability.close()
    return 0
