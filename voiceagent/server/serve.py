"""The engine of ``voiceagent serve``: load the agent and its models once, then run uvicorn
until stopped (SIGTERM drains: :mod:`.draining`)."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from ..errors import ConfigError
from ..events import JsonlEventWriter
from ..loader import apply_backend_overrides, load_agent
from ..ratelimit import RateLimitOptions
from ..observability import observe_calls
from ..session import resolve_backends
from .app import ServerConfig, create_app
from .client_address import ClientAddresses
from .draining import DrainingServer


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..transports.ice import parse_ice_server

    rate_limit = _rate_limit(args)
    ClientAddresses(args.trusted_proxy or [])  # a bad address fails before the models load
    if not args.input_timeout > 0:
        raise ConfigError("--input-timeout must be positive (seconds)")
    if not args.drain_timeout >= 0:
        raise ConfigError("--drain-timeout must be 0 or more (seconds)")
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
                          input_timeout=args.input_timeout, rate_limit=rate_limit,
                          trusted_proxies=args.trusted_proxy or [],
                          metrics=observability.metrics)
    app = create_app(agent, backends, config)
    print(f"voiceagent: serving {args.agent} on http://{args.host}:{args.port}/", flush=True)
    try:
        # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1
        # (anyone on this host); only --trusted-proxy decides whose header counts
        server = DrainingServer(uvicorn.Config(app, host=args.host, port=args.port,
                                               log_level="warning", proxy_headers=False),
                                app.state.registry, args.drain_timeout)
        server.run()
    finally:
        if writer:
            writer.close()
        observability.close()
    return 0


def _rate_limit(args: argparse.Namespace) -> RateLimitOptions | None:
    if args.rate_limit == 0:
        return None
    try:
        return RateLimitOptions(per_minute=args.rate_limit, burst=args.rate_burst)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ConfigError(f"--rate-{'limit' if problem['loc'][0] == 'per_minute' else 'burst'}"
                          f": {problem['msg']}") from exc
