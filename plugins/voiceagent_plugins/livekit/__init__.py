"""voiceagent's offline models as LiveKit Agents plugins (``pip install 'voiceagent[livekit]'``).

::

    from livekit.agents import AgentSession
    from voiceagent_plugins import livekit as va

    session = AgentSession(vad=va.VAD(), stt=va.STT(), llm=va.LLM(), tts=va.TTS(),
                           turn_handling={"turn_detection": va.TurnDetector()})

Each class implements the matching ``livekit.agents`` base class over a voiceagent backend
from the registry (the same shared model instances ``voiceagent run`` uses), so a LiveKit
agent runs with no provider account and no network. The other direction, LiveKit plugins
as voiceagent backends, is :mod:`voiceagent_plugins.livekit.backends` (registry name
``livekit:<plugin>.<Class>``). docs/livekit.md has both.

Names are imported on first use, so importing this package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"STT": ".stt", "VAD": ".vad", "TTS": ".tts", "LLM": ".llm",
            "TurnDetector": ".turn"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
