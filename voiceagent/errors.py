"""Errors the framework reports to users: each message says what to do."""

from __future__ import annotations


class VoiceAgentError(Exception):
    """Base for errors that are shown to the user as one clear line, not a traceback."""


class ConfigError(VoiceAgentError):
    """Bad configuration: an unknown backend, a bad option, an unusable agent file."""


class BackendUnavailable(VoiceAgentError):
    """A backend's optional package is missing; the message names what to install."""


class AudioInputError(VoiceAgentError):
    """Input audio that cannot be used: not audio, empty, NaN samples, wrong shape."""


def require(module: str, package: str, extra: str | None = None):
    """Import ``module`` or raise :class:`BackendUnavailable` naming the package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'voiceagent[{extra}]'" if extra else f"pip install {package}"
        raise BackendUnavailable(
            f"the {package!r} package is needed for this backend ({hint})") from exc


class BackendError(VoiceAgentError):
    """A backend failed or timed out while serving a request (an LLM call, a synthesis)."""
