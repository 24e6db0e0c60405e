"""Find backends by name through entry points.

A package adds a backend by declaring, in its own pyproject::

    [project.entry-points."voiceagent.stt"]
    mystt = "my_package.stt:MySTT"

The target is called with the backend options as keyword arguments. Instances are cached per
(kind, name, options) so a model loads once per process and every session shares it.
"""

from __future__ import annotations

import json
import threading
from importlib.metadata import entry_points
from typing import Any, Literal

from .errors import BackendUnavailable, ConfigError

Kind = Literal["vad", "stt", "llm", "tts", "turn", "completeness"]
KINDS: tuple[Kind, ...] = ("vad", "stt", "llm", "tts", "turn", "completeness")

_lock = threading.Lock()
_instances: dict[tuple[str, str, str], Any] = {}


def group(kind: Kind) -> str:
    return f"voiceagent.{kind}"


def available(kind: Kind) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group(kind)))


def load_factory(kind: Kind, name: str) -> Any:
    if kind not in KINDS:
        raise ConfigError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
    matches = [ep for ep in entry_points(group=group(kind)) if ep.name == name]
    if not matches:
        names = ", ".join(available(kind)) or "none installed"
        raise ConfigError(f"no {kind} backend named {name!r} (available: {names})")
    try:
        return matches[0].load()
    except ImportError as exc:
        raise BackendUnavailable(
            f"{kind} backend {name!r} cannot be imported: {exc}") from exc


def get(kind: Kind, name: str, **options: Any) -> Any:
    """The shared instance of backend ``name`` with ``options`` (created on first use)."""
    key = (kind, name, json.dumps(options, sort_keys=True, default=str))
    with _lock:
        if key not in _instances:
            _instances[key] = load_factory(kind, name)(**options)
        return _instances[key]


def resolve(kind: Kind, spec: Any, **options: Any) -> Any:
    """A backend from a name (looked up here) or an object used as it is."""
    if isinstance(spec, str):
        return get(kind, spec, **options)
    if spec is None:
        raise ConfigError(f"no {kind} backend configured")
    return spec
