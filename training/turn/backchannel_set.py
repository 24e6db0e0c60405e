"""Copy a small backchannel set out of a ``synth.py`` run: each phrase in two voices of
different families drawn at random (seeded), for the barge-in tests (tests/data/backchannels).

    python -m training.turn.backchannel_set --data DIR --out tests/data/backchannels

Synthetic speech only (the real clips are evaluation data). Whisper's transcript of each
clip is kept in the manifest: it often hears a backchannel as something else ("You", "10",
"Eheh."), which is what the barge-in filter must cope with.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

PHRASES = ("Mm-hmm.", "Uh-huh.", "Yeah.", "Right.", "Okay.", "Mm.", "Hmm.", "Oh.", "Cool.",
           "Got it.", "Exactly.", "True.")
PER_PHRASE = 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a synth.py output folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=16)
    args = p.parse_args()
    rng = random.Random(args.seed)
    rows = [json.loads(line) for line in (args.data / "manifest.jsonl").read_text().splitlines()]
    chosen = []
    for phrase in PHRASES:
        said = [r for r in rows if r["kind"] == "backchannel" and r["text"] == phrase]
        rng.shuffle(said)  # drawn blind: never by what the recogniser made of them
        picked: list[dict] = []
        for row in said:
            if len(picked) < PER_PHRASE and row["family"] not in {r["family"] for r in picked}:
                picked.append(row)
        chosen += picked
    families = {r["family"] for r in chosen}
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "manifest.jsonl").open("w") as f:
        for row in chosen:
            phrase = row["text"].rstrip(".").lower().replace("-", "_").replace(" ", "_")
            name = f"{phrase}_{row['family']}.wav"
            shutil.copy(args.data / row["file"], args.out / name)
            f.write(json.dumps({"file": name, "text": row["text"], "voice": row["voice"],
                                "family": row["family"], "whisper": row["transcript"]}) + "\n")
    print(f"{len(chosen)} clips, families {sorted(families)} -> {args.out}")


if __name__ == "__main__":
    main()
