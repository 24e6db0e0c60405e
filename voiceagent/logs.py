"""Structured logs: every log record as one JSON line, and every session event as one too.

``voiceagent run|serve|sip --log-json`` installs :class:`JsonFormatter` on the root logger and
attaches an :class:`EventLogger` to every session: each event becomes a record of the
``voiceagent.events`` logger with the session's id and, where the event belongs to one, the
turn's id, so a log pipeline can follow a call and each turn in it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from .events import Event, MetricsEvent

if TYPE_CHECKING:
    from .session import AgentSession

EVENTS_LOGGER = "voiceagent.events"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...}``; a session event's fields are merged
    in (``session_id``, ``turn_id``, ``event`` and the event's own)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def use_json_logs(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Every log record of the process as a JSON line on ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.getLogger(EVENTS_LOGGER).setLevel(level)


class EventLogger:
    """Logs every event of the sessions it is attached to (a session observer)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(EVENTS_LOGGER)

    def attach(self, session: AgentSession) -> None:
        session.events.subscribe(self.log_event)

    def log_event(self, event: Event) -> None:
        fields = event.model_dump(mode="json")
        turn_id = (event.metrics.turn_id if isinstance(event, MetricsEvent)
                   else fields.get("turn_id"))
        fields.pop("type")
        fields.pop("session_id")
        level = logging.WARNING if event.type == "error" else logging.INFO
        self._log.log(level, event.type, extra={"event": {
            "event": event.type, "session_id": event.session_id, "turn_id": turn_id,
            "session_ts": fields.pop("ts"), **fields}})
