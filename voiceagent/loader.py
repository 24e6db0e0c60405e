"""An agent from its entrypoint file, with the command line's backend choices applied.

Shared by the ``voiceagent`` commands (run, serve, sip) and the benchmarks; it imports none
of them, so they can all import it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import Any

from . import registry
from .agent import Agent
from .errors import ConfigError, VoiceAgentError


def load_agent(path: str | Path) -> Agent:
    """The agent an entrypoint file defines: a module-level ``agent`` or ``create_agent()``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such agent file")
    spec = importlib.util.spec_from_file_location(f"voiceagent_entry_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except VoiceAgentError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: failed to load: {type(exc).__name__}: {exc}") from exc
    candidate: Any = getattr(module, "agent", None)
    if candidate is None and callable(getattr(module, "create_agent", None)):
        candidate = module.create_agent()
    if not isinstance(candidate, Agent):
        raise ConfigError(f"{path}: define `agent = Agent(...)` or `def create_agent() -> Agent`")
    return candidate


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values that parse as JSON (numbers, true, null) are typed."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"backend option {pair!r} must look like key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """``--stt NAME``, ``--stt-option KEY=VALUE`` and so on for every backend kind."""
    for kind in registry.KINDS:
        parser.add_argument(f"--{kind}", metavar="NAME",
                            help=f"{kind} backend by registry name (overrides the agent file)")
        parser.add_argument(f"--{kind}-option", action="append", metavar="KEY=VALUE",
                            help=f"an option for the {kind} backend (repeatable)")


def apply_backend_overrides(agent: Agent, args: argparse.Namespace) -> None:
    """What :func:`add_backend_flags` parsed, applied to ``agent``."""
    for kind in registry.KINDS:
        name = getattr(args, kind)
        extra = parse_options(getattr(args, f"{kind}_option") or [])
        if name is not None:
            agent.with_backend(kind, name, **extra)
        elif extra:
            agent.backend_options[kind].update(extra)
