"""Speech clips with reference transcripts, for accuracy tests and benchmarks (``--data DIR``).

A directory holds audio files and a ``manifest.jsonl``: one JSON object per line with at least
``file`` (relative to the directory), ``text`` (the reference transcript) and ``seconds``.
Problems are reported with the file and line they are on, before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Clip:
    name: str  # the file name without its suffix
    path: Path
    text: str
    seconds: float


def _clip(directory: Path, where: str, entry: object) -> Clip:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    missing = [key for key in ("file", "text", "seconds") if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if not isinstance(entry["file"], str) or not isinstance(entry["text"], str):
        raise ValueError(f"{where}: 'file' and 'text' must be strings")
    try:
        seconds = float(entry["seconds"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'seconds' must be a number, got {entry['seconds']!r}") from None
    path = directory / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{where}: audio file {path} not found")
    return Clip(name=path.stem, path=path, text=entry["text"], seconds=seconds)


def load_manifest(directory: str | Path) -> list[Clip]:
    """The clips listed in ``directory/manifest.jsonl``, in file order (blank lines skipped)."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {directory} (expected one JSON object per "
                                "line with 'file', 'text' and 'seconds')")
    clips = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
        clips.append(_clip(directory, where, entry))
    if not clips:
        raise ValueError(f"{manifest} lists no clips")
    return clips
