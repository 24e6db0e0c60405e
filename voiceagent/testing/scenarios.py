"""Scenario evals: ``voiceagent eval AGENT.py SCENARIOS.yaml [--json]``.

The file is a YAML list of scenarios; each runs in a session of its own, turn by turn::

    - name: books a table
      turns:
        - user: I would like to book a table for two.
          handoff_to: booking
          reply_contains: phone
        - user: {audio: clips/phone_number.wav}     # relative to the YAML file
          tool_called: {name: complete, args: {digits: "5551234"}}
          reply_matches: "5.*5.*5"
          judge: reads the phone number back
          within_ms: 3000

A turn is typed text or a WAV clip spoken through the real pipeline (VAD, STT, endpointer);
the reply an audio turn is checked on is the agent's audio transcribed back by the session's
STT, so what is judged is what a caller would hear. ``judge`` asks the session's LLM.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import registry
from ..agent import Agent
from ..audio import load_audio
from ..backends import LLM, STT
from ..errors import ConfigError
from ..loader import apply_backend_overrides, load_agent
from ..session import resolve_backends
from .conversation import Conversation, TurnResult, transcribe
from .judge import judge


class AudioInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    audio: str


class ToolExpectation(BaseModel):
    """A tool call the turn must make: its name, and arguments that must be among the
    call's (others may be there too)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ScenarioTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: typed text, or ``{audio: path}``
    user: str | AudioInput | None = None
    #: a WAV clip (the same as ``user: {audio: path}``)
    audio: str | None = None
    reply_contains: str | list[str] | None = None
    reply_matches: str | None = None
    tool_called: ToolExpectation | list[ToolExpectation] | None = None
    handoff_to: str | None = None
    judge: str | None = None
    within_ms: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_input(self) -> ScenarioTurn:
        if (self.user is None) == (self.audio is None):
            raise ValueError("a turn needs exactly one of user (text or {audio: path}) or audio")
        if self.reply_matches is not None:
            try:
                re.compile(self.reply_matches)
            except re.error as exc:
                raise ValueError(f"reply_matches is not a regular expression: {exc}") from None
        return self

    @property
    def audio_path(self) -> str | None:
        return self.user.audio if isinstance(self.user, AudioInput) else self.audio


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    turns: list[ScenarioTurn] = Field(min_length=1)


class TurnReport(BaseModel):
    user: str
    transcript: str
    reply: str
    tool_calls: list[dict[str, Any]]
    handoffs: list[str]
    agent: str
    latency_ms: float | None
    passed: bool
    failures: list[str]


class ScenarioReport(BaseModel):
    name: str
    passed: bool
    turns: list[TurnReport]


def load_scenarios(path: str | Path) -> list[Scenario]:
    """The scenarios of a YAML file; a mistake is one ConfigError naming where it is."""
    from ..deps import require

    yaml = require("yaml", "PyYAML", "eval")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such scenario file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: expected a list of scenarios (- name: ..., turns: [...])")
    scenarios = []
    for index, item in enumerate(raw, 1):
        try:
            scenarios.append(Scenario.model_validate(item))
        except ValidationError as exc:
            where = item.get("name") if isinstance(item, dict) else None
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'scenario'}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"{path}: scenario {index}"
                              f"{f' ({where})' if where else ''}: {problems}") from None
    for scenario in scenarios:
        for turn in scenario.turns:
            clip = turn.audio_path
            if clip is not None and not (path.parent / clip).is_file():
                raise ConfigError(f"{path}: scenario {scenario.name!r}: no such audio file "
                                  f"{clip} (paths are relative to the scenario file)")
    return scenarios


async def run_scenarios(agent: Agent, scenarios: list[Scenario], base: Path,
                        backends: dict[str, object], *,
                        turn_timeout: float = 120.0) -> list[ScenarioReport]:
    """Each scenario in a fresh session of ``agent`` on ``backends`` (loaded once)."""
    reports = []
    for scenario in scenarios:
        turns: list[TurnReport] = []
        async with Conversation(agent, backends=backends, turn_timeout=turn_timeout) as chat:
            heard: list[str] = []  # the conversation so far, for the judge
            for turn in scenario.turns:
                report = await _run_turn(chat, turn, base, heard)
                turns.append(report)
                heard += [f"user: {report.transcript}", f"assistant: {report.reply}"]
        reports.append(ScenarioReport(name=scenario.name, turns=turns,
                                      passed=all(t.passed for t in turns)))
    return reports


async def _run_turn(chat: Conversation, turn: ScenarioTurn, base: Path,
                    heard: list[str]) -> TurnReport:
    clip = turn.audio_path
    if clip is None:
        assert isinstance(turn.user, str)
        said = turn.user
        result = await chat.say_text(said)
        reply = result.reply_text
    else:
        said = f"[audio] {clip}"
        result = await chat.say_audio(load_audio(base / clip))
        stt: STT = chat.backends["stt"]  # type: ignore[assignment]
        reply = await transcribe(stt, result.audio) if result.audio.any() else ""
    llm: LLM = chat.backends["llm"]  # type: ignore[assignment]
    failures = await check(turn, result, reply, llm, "\n".join(heard))
    return TurnReport(
        user=said, transcript=result.transcript, reply=reply,
        tool_calls=[{"name": c.name, "arguments": c.arguments, "result": c.result,
                     "error": c.error} for c in result.tool_calls],
        handoffs=result.handoffs, agent=result.agent, latency_ms=result.latency_ms,
        passed=not failures, failures=failures)


async def check(turn: ScenarioTurn, result: TurnResult, reply: str, llm: LLM,
                conversation: str = "") -> list[str]:
    """Why the turn fails its expectations (nothing: it passes)."""
    failures = []
    if result.timed_out:
        failures.append("the turn did not finish: no user turn was detected, or the agent "
                        "did not finish answering")
    wanted = [turn.reply_contains] if isinstance(turn.reply_contains, str) else (
        turn.reply_contains or [])
    for text in wanted:
        if text.lower() not in reply.lower():
            failures.append(f"reply_contains {text!r}: the reply was {reply!r}")
    if turn.reply_matches is not None and not re.search(turn.reply_matches, reply, re.I):
        failures.append(f"reply_matches /{turn.reply_matches}/: the reply was {reply!r}")
    expected = [turn.tool_called] if isinstance(turn.tool_called, ToolExpectation) else (
        turn.tool_called or [])
    for tool in expected:
        failures += _check_tool(tool, result)
    if turn.handoff_to is not None and turn.handoff_to not in result.handoffs:
        failures.append(f"handoff_to {turn.handoff_to!r}: "
                        + (f"the conversation went to {result.handoffs}" if result.handoffs
                           else f"no handoff; {result.agent} kept the conversation"))
    if turn.within_ms is not None:
        if result.latency_ms is None:
            failures.append(f"within_ms {turn.within_ms:g}: the agent never spoke")
        elif result.latency_ms > turn.within_ms:
            failures.append(f"within_ms {turn.within_ms:g}: the agent answered after "
                            f"{result.latency_ms:.0f} ms")
    if turn.judge is not None:
        verdict = await judge(llm, turn.judge, reply, conversation=conversation)
        if not verdict.passed:
            failures.append(f"judge {turn.judge!r}: {verdict.reason}")
    return failures


def _check_tool(tool: ToolExpectation, result: TurnResult) -> list[str]:
    calls = result.called(tool.name)
    if not calls:
        made = [c.name for c in result.tool_calls]
        return [f"tool_called {tool.name}: not called (calls: {made or 'none'})"]
    for call in calls:
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            continue
        if all(_same(args.get(k), v) for k, v in tool.args.items()):
            return []
    return [f"tool_called {tool.name} with {tool.args}: called with "
            f"{[c.arguments for c in calls]}"]


def _same(got: object, want: object) -> bool:
    """Equal, or equal as text (YAML's 5551234 and the LLM's "5551234" are the same)."""
    return got == want or str(got).strip().lower() == str(want).strip().lower()


def format_table(reports: list[ScenarioReport]) -> str:
    """One line per turn: pass/fail, latency, and each failed expectation's reason."""
    rows = [("scenario", "turn", "result", "latency", "agent", "detail")]
    for scenario in reports:
        for index, turn in enumerate(scenario.turns, 1):
            latency = "-" if turn.latency_ms is None else f"{turn.latency_ms:.0f} ms"
            detail = "; ".join(turn.failures) if turn.failures else _short(turn.reply)
            rows.append((scenario.name if index == 1 else "", str(index),
                         "pass" if turn.passed else "FAIL", latency, turn.agent, detail))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5]
             for row in rows]
    passed = sum(s.passed for s in reports)
    lines.append(f"{passed}/{len(reports)} scenarios passed")
    return "\n".join(lines)


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


async def eval_file(args: argparse.Namespace) -> int:
    """``voiceagent eval``: 0 when every scenario passes, 1 when one fails."""
    agent = load_agent(args.agent)
    apply_backend_overrides(agent, args)
    scenarios = load_scenarios(args.scenarios)  # a mistake in the file before models load
    backends = resolve_backends(agent)
    try:
        reports = await run_scenarios(agent, scenarios, Path(args.scenarios).parent, backends,
                                      turn_timeout=args.turn_timeout)
    finally:
        await registry.aclose(backends.values())
    if args.json:
        print(json.dumps({"scenarios": [r.model_dump() for r in reports]}, indent=2))
    else:
        print(format_table(reports))
    sys.stdout.flush()
    return 0 if all(r.passed for r in reports) else 1
