"""Shared by the fuzz tests (tests/test_fuzz_*.py): how long they run, and the mutations
that turn a valid message into the malformed ones a fuzzer or a broken peer sends.

``HYPOTHESIS_PROFILE=ci`` (the default) is the bounded run of the test suite;
``HYPOTHESIS_PROFILE=long`` (scripts/fuzz.sh) tries ``FUZZ_SCALE`` (100) times as many
inputs. Each test labels its inputs with :func:`hypothesis.event`, so
``--hypothesis-show-statistics`` says how many of which kinds were tried.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = int(os.environ.get("FUZZ_SCALE", "100")) if PROFILE == "long" else 1


def fuzz_settings(ci_examples: int) -> settings:
    """``ci_examples`` inputs in the bounded run, SCALE times as many in the long one. No
    deadline: a busy CI machine makes single inputs slow, not wrong."""
    return settings(max_examples=ci_examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


#: Text a mutation puts in: short and odd, or huge, or control characters and non-ASCII
#: digits (which pass str.isdigit() but not int()).
junk_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", ":", ";", "=", "<", ">", "/", "\t", "\x00", "\r", "\n", "\r\n",
                     "-1", "0", "65536", "99999999999", "²", "٣", "1e3", "0x10", "NaN",
                     "\u2028", "\x85", "\xff"]),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.builds(lambda c, n: c * n, st.sampled_from(["9", "a", " ", ":", "<"]),
              st.integers(100, 5000)),
)


@st.composite
def mutated_lines(draw: st.DrawFn, lines: list[str], label: str) -> list[str]:
    """The lines after one to three mutations, each counted as an event ``label: kind``:
    a line removed, duplicated, moved, replaced by junk, cut short, one inserted, or one of
    a line's fields replaced."""
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["remove", "duplicate", "move", "replace", "truncate",
                                     "field", "insert"]))
        event(f"{label}: {kind}")
        if not lines:
            lines.append(draw(junk_text))
            continue
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "remove":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "move":
            lines.insert(draw(st.integers(0, len(lines) - 1)), lines.pop(i))
        elif kind == "replace":
            lines[i] = draw(junk_text)
        elif kind == "truncate":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif kind == "insert":
            lines.insert(i, lines[i][:2] + draw(junk_text))
        else:  # one field of the line: split at spaces, colons, slashes, semicolons, '='
            fields = _fields(lines[i])
            j = draw(st.integers(0, len(fields) - 1))
            fields[j] = draw(junk_text)
            lines[i] = "".join(fields)
    return lines


def _fields(line: str) -> list[str]:
    """The line cut before and after each separator, so that joining gives it back."""
    parts, start = [], 0
    for i, ch in enumerate(line):
        if ch in " :/;=,<>":
            parts += [line[start:i], ch]
            start = i + 1
    parts.append(line[start:])
    return parts
