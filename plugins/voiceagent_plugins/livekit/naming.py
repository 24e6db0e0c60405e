"""What LiveKit asks of every plugin class: the model's name and the provider's."""

from __future__ import annotations

from typing import Any


class NamedBackend:
    """Mixed in before LiveKit's base class: ``model`` names the voiceagent backend (its
    registry name, or its class), ``provider`` is voiceagent."""

    _backend_name = "voiceagent"

    def _name_backend(self, backend: Any) -> None:
        self._backend_name = backend if isinstance(backend, str) else type(backend).__name__

    @property
    def model(self) -> str:
        return self._backend_name

    @property
    def provider(self) -> str:
        return "voiceagent"
