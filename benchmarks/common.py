"""What every benchmark shares: ``--data DIR`` with a manifest.jsonl, ``--runs``, ``--clips``,
``--json``, and a note of the machine the numbers came from."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, UTC
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as `python benchmarks/x.py` from a checkout

from voiceagent_eval.speechdata import Clip, load_manifest  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "speech"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with manifest.jsonl and its clips (default: the shared clips)")
    p.add_argument("--clips", nargs="*", metavar="NAME",
                   help="only these clips (file names without .wav)")
    p.add_argument("--runs", type=int, default=3, help="repetitions for timing medians")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return p


def add_agent_arguments(p: argparse.ArgumentParser) -> None:
    """``--agent FILE`` (default: the basic example) and the CLI's backend overrides."""
    from voiceagent.loader import add_backend_flags

    p.add_argument("--agent", default=str(REPO / "examples" / "basic_agent.py"))
    add_backend_flags(p)


def agent_from(args: argparse.Namespace):
    from voiceagent.loader import apply_backend_overrides, load_agent

    agent = load_agent(args.agent)
    apply_backend_overrides(agent, args)
    return agent


def backend_flags(args: argparse.Namespace) -> list[str]:
    """The backend overrides of :func:`add_agent_arguments` again as command-line flags (for
    a ``voiceagent serve`` of the same agent)."""
    from voiceagent import registry

    flags = []
    for kind in registry.KINDS:
        if (name := getattr(args, kind)) is not None:
            flags += [f"--{kind}", name]
        for option in getattr(args, f"{kind}_option") or []:
            flags += [f"--{kind}-option", option]
    return flags


def agent_benchmark(doc: str, extra=None):
    """The command line of a benchmark that runs a whole agent: its arguments (``extra``
    adds its own), the clips, the agent and its backends (loaded before anything is timed)."""
    from voiceagent.session import resolve_backends

    p = parser(doc.split("\n")[0])
    add_agent_arguments(p)
    if extra is not None:
        extra(p)
    args = p.parse_args()
    selected = clips(args)
    agent = agent_from(args)
    return args, selected, agent, resolve_backends(agent)


def clips(args: argparse.Namespace) -> list[Clip]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        selected = load_manifest(args.data)
    except (OSError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    if args.clips:
        unknown = set(args.clips) - {c.name for c in selected}
        if unknown:
            sys.exit(f"error: no such clips in {args.data}: {', '.join(sorted(unknown))}")
        selected = [c for c in selected if c.name in args.clips]
    return selected


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d")}


def ms(seconds: float | None, width: int = 7) -> str:
    """Seconds as whole milliseconds, right-aligned; "-" where there is no figure."""
    return f"{seconds * 1000:{width}.0f}" if seconds is not None else f"{'-':>{width}}"


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def emit(figures: dict, as_json: bool, table: str) -> None:
    figures = {"machine": machine(), **figures}
    if as_json:
        print(json.dumps(figures))
    else:
        print(table)
        m = figures["machine"]
        print(f"\nmachine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}")
