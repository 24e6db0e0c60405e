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


class BackendError(VoiceAgentError):
    """A backend failed or timed out while serving a request (an LLM call, a synthesis)."""
