"""``python -m voiceagent.doctor``: which backends are installed and usable, without loading
models. Exits non-zero when a default backend of the offline agent is missing."""

from __future__ import annotations

import sys

from . import registry
from .agent import Agent
from .errors import VoiceAgentError


def main() -> int:
    defaults = Agent("").backends
    missing = 0
    for kind in registry.KINDS:
        for name in registry.available(kind):
            try:
                factory = registry.load_factory(kind, name)
                check = getattr(sys.modules[factory.__module__], "bundled_model_path", None)
                detail = f"model {check()}" if check else "ok"
                status = "ok"
            except VoiceAgentError as exc:
                status, detail = "MISSING", str(exc)
                missing += defaults.get(kind) == name
            mark = "*" if defaults.get(kind) == name else " "
            print(f"{mark} {kind:4} {name:10} {status:8} {detail}")
    print("(* = default of the offline agent)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
