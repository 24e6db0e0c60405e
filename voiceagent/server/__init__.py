"""``voiceagent serve``: talk to an agent from a browser over WebRTC."""

from .app import ServerConfig, SessionRegistry, create_app

__all__ = ["ServerConfig", "SessionRegistry", "create_app"]
