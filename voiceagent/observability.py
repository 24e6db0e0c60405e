"""What ``voiceagent run|serve|sip`` turn on to watch calls: recordings, JSON logs, traces
and Prometheus metrics. Each is a session observer added to the agent (``observer.py``); the
exporters' packages are imported only when they are turned on."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agent import Agent, RecordingOptions
from .deps import require
from .errors import ConfigError
from .logs import EventLogger, use_json_logs

if TYPE_CHECKING:
    from .telemetry.prometheus import PrometheusMetrics


def add_observability_flags(parser: argparse.ArgumentParser, *, metrics: str = "") -> None:
    """``--record``, ``--log-json``, ``--otel``; ``metrics``: ``"route"`` (``--no-metrics``,
    for a server with a /metrics route) or ``"port"`` (``--metrics-port``)."""
    parser.add_argument("--record", metavar="DIR",
                        help="record each session in DIR: a stereo WAV (caller left, agent "
                             "right) and a JSON transcript. Recordings hold what callers "
                             "said: off by default")
    parser.add_argument("--log-json", action="store_true",
                        help="log JSON lines on stderr: one per session event, with the "
                             "session and turn ids")
    parser.add_argument("--otel", action="store_true",
                        help="export OpenTelemetry traces, configured by the OTEL_* "
                             "environment variables (OTEL_TRACES_EXPORTER or "
                             "OTEL_EXPORTER_OTLP_ENDPOINT also turn them on)")
    if metrics == "route":
        parser.add_argument("--no-metrics", dest="metrics", action="store_false",
                            help="do not serve Prometheus metrics on /metrics")
    elif metrics == "port":
        parser.add_argument("--metrics-port", type=int, metavar="PORT",
                            help="serve Prometheus metrics on http://HOST:PORT/metrics")


@dataclass
class Observability:
    """What :func:`observe_calls` turned on; :meth:`close` flushes the traces."""

    metrics: PrometheusMetrics | None = None
    tracer_provider: Any = None
    _closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()


def observe_calls(agent: Agent, args: argparse.Namespace, *,
                  metrics: bool = False) -> Observability:
    """Apply the flags of :func:`add_observability_flags` to ``agent``'s sessions."""
    obs = Observability()
    if args.record:
        folder = Path(args.record)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot record into {folder}: {exc}") from exc
        current = agent.options.recording
        agent.options.recording = RecordingOptions(
            dir=folder, redact=current.redact if current is not None else None)
    if args.log_json:
        use_json_logs()
        agent.observers.append(EventLogger())
    if args.otel or tracing_requested():
        require("opentelemetry.sdk", "opentelemetry-sdk", "otel")
        from .telemetry.tracing import SessionTracer, provider_from_environment

        provider = provider_from_environment()
        agent.observers.append(SessionTracer(provider))
        obs.tracer_provider = provider
        obs._closers.append(provider.shutdown)  # exports the spans still batched
    if metrics:
        require("prometheus_client", "prometheus-client", "metrics")
        from .telemetry.prometheus import PrometheusMetrics

        obs.metrics = PrometheusMetrics()
        agent.observers.append(obs.metrics)
    return obs


def tracing_requested() -> bool:
    """The OpenTelemetry variables ask for traces (an exporter named, or an endpoint)."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    return (exporter not in ("", "none")
            or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))


def serve_metrics(obs: Observability, host: str, port: int) -> None:
    """Serve ``obs.metrics`` on http://host:port/metrics (a thread of prometheus-client's)
    until :meth:`Observability.close`."""
    from prometheus_client import start_http_server

    assert obs.metrics is not None
    try:
        server, thread = start_http_server(port, host, registry=obs.metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    obs._closers.append(stop)
