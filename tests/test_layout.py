"""The runtime stands alone: evaluation helpers (``voiceagent_eval``) are for tests,
benchmarks and training, and nothing an agent runs imports them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a fresh interpreter, so that what other tests imported does not count.
IMPORT_THE_RUNTIME = textwrap.dedent("""
    import importlib
    import pkgutil
    import sys
    from importlib.metadata import entry_points

    import voiceagent

    for module in pkgutil.walk_packages(voiceagent.__path__, "voiceagent."):
        importlib.import_module(module.name)
    for group in ("vad", "stt", "llm", "tts", "turn", "completeness"):
        for backend in entry_points(group=f"voiceagent.{group}"):
            importlib.import_module(backend.module)
    print(sorted(name for name in sys.modules if name.split(".")[0] == "voiceagent_eval"))
""")


def test_nothing_at_run_time_imports_the_evaluation_helpers():
    """Every module of ``voiceagent`` and every backend plugin, imported."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_THE_RUNTIME], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"imported at run time: {proc.stdout.strip()}"
