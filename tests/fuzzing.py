"""Shared by the fuzz tests (tests/test_fuzz_*.py): how long they run, and the mutations
that turn a valid message into the malformed ones a fuzzer or a broken peer sends.

``HYPOTHESIS_PROFILE=ci`` (the default) is the bounded run of the test suite;
``HYPOTHESIS_PROFILE=long`` (scripts/fuzz.sh) tries ``FUZZ_SCALE`` (25) times as many
inputs. Each input is counted by kind with :func:`tried` (and its mutations labelled with
:func:`hypothesis.event`); loaded as a pytest plugin (``-p fuzzing``, as scripts/fuzz.sh
does), this module prints the counts at the end of the run.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = int(os.environ.get("FUZZ_SCALE", "25")) if PROFILE == "long" else 1


#: Inputs tried in this process, by kind (hypothesis's replays and shrinks included).
TRIED: Counter[str] = Counter()


def tried(kind: str) -> None:
    """Count one input of this kind, and label it for ``--hypothesis-show-statistics``."""
    event(kind)
    TRIED[kind] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TRIED:
        terminalreporter.section(f"fuzz inputs tried (profile {PROFILE}, scale {SCALE})")
        for kind, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{count:>9}  {kind}")
        terminalreporter.write_line(f"{sum(TRIED.values()):>9}  in all")


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


# -- SIP ------------------------------------------------------------------------------------

#: A phone's offer: G.711 both ways, RFC 4733 events, and a video stream to refuse.
SIP_OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             "m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
             "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
             "a=sendrecv\r\nm=video 6002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n")


def sip_lines(method: str, *, call_id: str = "call-1@127.0.0.1", branch: str = "z9hG4bK-1",
              cseq: int = 1, to_tag: str = "", body: str | None = None) -> list[str]:
    """A valid request as lines, the blank line and the body last; an INVITE carries
    :data:`SIP_OFFER` unless ``body`` says otherwise."""
    if body is None:
        body = SIP_OFFER if method == "INVITE" else ""
    lines = [f"{method} sip:agent@127.0.0.1:5060 SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:5071;branch={branch};rport",
             "Max-Forwards: 70",
             'From: "Alice" <sip:alice@127.0.0.1>;tag=abc',
             "To: <sip:agent@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}",
             "Contact: <sip:alice@127.0.0.1:5071>"]
    if method == "INVITE":
        lines.append("Content-Type: application/sdp")
    elif method == "INFO":
        lines.append("Content-Type: application/dtmf-relay")
    return lines + [f"Content-Length: {len(body.encode())}", "", body]
