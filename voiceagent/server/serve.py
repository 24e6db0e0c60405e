"""The engine of ``voiceagent serve``: load the agent and its models once, then run uvicorn."""

from __future__ import annotations

import argparse

from ..events import JsonlEventWriter
from ..loader import apply_backend_overrides, load_agent
from ..observability import observe_calls
from ..session import resolve_backends
from .app import ServerConfig, create_app


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..transports.ice import parse_ice_server

    agent = load_agent(args.agent)
    apply_backend_overrides(agent, args)
    observability = observe_calls(agent, args, metrics=args.metrics)
    ice_servers = [parse_ice_server(url) for url in args.ice_server or []]
    backends = resolve_backends(agent)  # every model loaded before the first browser comes
    writer = JsonlEventWriter(args.events) if args.events else None
    config = ServerConfig(ice_servers=ice_servers, host_addresses=args.ice_host_address or [],
                          token=args.token, max_sessions=args.max_sessions,
                          public_url=args.public_url, close_backends=True,
                          subscribers=[writer] if writer else [],
                          metrics=observability.metrics)
    app = create_app(agent, backends, config)
    print(f"voiceagent: serving {args.agent} on http://{args.host}:{args.port}/", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if writer:
            writer.close()
        observability.close()
    return 0
