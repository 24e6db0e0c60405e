"""Soak: many sessions in one process, watching for leaks (RSS, threads, fds, asyncio tasks).

    python benchmarks/soak.py file   [--sessions 1000] [--every 50] [--parallel 1]
    python benchmarks/soak.py webrtc [--sessions 200]  [--every 20] [--parallel 2]

``file`` runs sessions through the file transport in this process with the real models (each
speaks one shared clip, in turn, and must be answered). ``webrtc`` starts ``voiceagent serve``
with the agent and sends independent aiortc callers at it; the server's figures come from
/proc and its /health. Prints the curve and each figure's growth after warm-up.
"""

from __future__ import annotations

import asyncio
import sys

from common import REPO, add_agent_arguments, agent_from, clips, emit, machine, parser

from voiceagent_eval.soak import SoakResult, file_soak, webrtc_soak

# Clips a caller would say in one breath (a few seconds), so a session is quick.
SHORT = 4.0


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("mode", choices=["file", "webrtc"])
    p.add_argument("--sessions", type=int)
    p.add_argument("--every", type=int, help="sample every N sessions")
    p.add_argument("--parallel", type=int, help="sessions at once")
    add_agent_arguments(p)
    args = p.parse_args()
    selected = [c for c in clips(args) if c.seconds <= SHORT] or clips(args)

    def progress(sample) -> None:
        print(f"  {sample}", file=sys.stderr, flush=True)

    if args.mode == "file":
        from voiceagent.session import resolve_backends

        agent = agent_from(args)
        result = asyncio.run(file_soak(agent, resolve_backends(agent), selected,
                                       sessions=args.sessions or 1000, every=args.every or 50,
                                       parallel=args.parallel or 1, progress=progress))
    else:
        result = serve_and_soak(args, selected, progress)
    figures = {"mode": args.mode, "machine": machine(), "clips": [c.name for c in selected],
               **result.as_dict()}
    emit(figures, args.json, result.table())


def serve_and_soak(args, selected, progress) -> SoakResult:
    from cli_server import voiceagent_serve

    with voiceagent_serve(args.agent) as (url, proc):
        return asyncio.run(webrtc_soak(url, proc.pid, selected, sessions=args.sessions or 200,
                                       every=args.every or 20, parallel=args.parallel or 2,
                                       progress=progress))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))
    main()
