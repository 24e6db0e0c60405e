"""``voiceagent serve``: talk to an agent from a browser over WebRTC, or by phone through a
media stream."""

from .app import ServerConfig, SessionRegistry, create_app

__all__ = ["ServerConfig", "SessionRegistry", "create_app"]
