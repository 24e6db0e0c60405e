"""Scenario files and expectations (``voiceagent eval``) without models: the file's mistakes,
each expectation's verdict and reason, the judge's reading of a verdict, the table."""

from __future__ import annotations

import pytest

from voiceagent.backends import LLMDelta, ToolCall
from voiceagent.errors import ConfigError
from voiceagent.testing import ScriptedLLM, ToolCallRecord, TurnResult, judge
from voiceagent.testing.scenarios import (
    ScenarioReport,
    ScenarioTurn,
    TurnReport,
    check,
    format_table,
    load_scenarios,
)


def write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, message", [
    ("- name: x\n  turns:\n    - reply_contains: hi\n",
     "scenario 1 (x): turns.0: Value error, a turn needs exactly one of user"),
    ("- name: x\n  turns:\n    - user: hi\n      reply_matches: '('\n",
     "scenario 1 (x): turns.0: Value error, reply_matches is not a regular expression: "
     "missing ), unterminated subpattern"),
    ("- name: x\n  turns:\n    - user: {audio: nowhere.wav}\n",
     "scenario 'x': no such audio file nowhere.wav (paths are relative to the scenario file)"),
    ("- name: x\n  turns: []\n", "scenario 1 (x): turns: List should have at least 1 item"),
    ("name: x\n", "expected a list of scenarios"),
    ("- name: [x\n", "not valid YAML"),
])
def test_a_mistake_in_the_file_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_scenarios(write(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_audio_turns_either_way_and_paths_relative_to_the_file(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    scenarios = load_scenarios(write(tmp_path, (
        "- name: x\n  turns:\n    - user: {audio: a.wav}\n    - audio: a.wav\n"
        "    - user: typed\n")))
    assert [t.audio_path for t in scenarios[0].turns] == ["a.wav", "a.wav", None]


def result(**fields) -> TurnResult:
    return TurnResult(**{"transcript": "book a table", "reply_text": "", **fields})


async def test_each_expectation_fails_with_its_reason():
    turn = ScenarioTurn(user="hi", reply_contains=["phone", "number"], reply_matches=r"\d{3}",
                        tool_called={"name": "complete", "args": {"digits": 5551234567}},
                        handoff_to="booking", within_ms=1000)
    made = [ToolCallRecord("complete", '{"digits": "5551230000"}', "Done", False)]
    failures = await check(turn, result(tool_calls=made, latency_ms=1500.0, agent="desk"),
                           "What phone?", ScriptedLLM())
    assert failures == [
        "reply_contains 'number': the reply was 'What phone?'",
        r"reply_matches /\d{3}/: the reply was 'What phone?'",
        "tool_called complete with {'digits': 5551234567}: called with "
        "['{\"digits\": \"5551230000\"}']",
        "handoff_to 'booking': no handoff; desk kept the conversation",
        "within_ms 1000: the agent answered after 1500 ms"]


async def test_a_turn_that_meets_its_expectations_passes():
    turn = ScenarioTurn(user="hi", reply_contains="PHONE", reply_matches="5.5",
                        tool_called=[{"name": "complete", "args": {"digits": 5551234567}}],
                        handoff_to="booking", within_ms=1000, judge="asks for a number")
    made = [ToolCallRecord("complete", '{"digits": "5551234567"}', "Done", False)]
    llm = ScriptedLLM([ToolCall("v", "verdict", '{"meets": true, "reason": "it asks"}')])
    failures = await check(turn, result(tool_calls=made, latency_ms=800.0, handoffs=["booking"]),
                           "Your phone is 5 5 5?", llm)
    assert failures == []
    assert llm.tool_choices == ["verdict"] and llm.tools == [["verdict"]]
    assert "Intent: asks for a number" in llm.calls[0][-1].content


async def test_the_judge_reads_a_tool_verdict_or_a_yes_or_no_and_says_when_it_has_none():
    refused = await judge(ScriptedLLM([ToolCall("v", "verdict",
                                                '{"meets": false, "reason": "off topic"}')]),
                          "greets", "Bye.")
    assert not refused and refused.reason == "off topic"
    assert await judge(ScriptedLLM("Yes, it greets."), "greets", "Hello!")
    unclear = await judge(ScriptedLLM("Maybe."), "greets", "Hello!")
    assert not unclear and "no verdict" in unclear.reason


async def test_a_turn_that_never_finished_and_an_agent_that_never_spoke_say_so():
    failures = await check(ScenarioTurn(user="hi", within_ms=500),
                           result(timed_out=True), "", ScriptedLLM())
    assert failures[0].startswith("the turn did not finish")
    assert failures[1] == "within_ms 500: the agent never spoke"


def test_the_table_has_a_line_per_turn_and_the_count():
    ok = TurnReport(user="hi", transcript="hi", reply="Hello there.", tool_calls=[],
                    handoffs=[], agent="desk", latency_ms=812.4, passed=True, failures=[])
    bad = ok.model_copy(update={"passed": False, "failures": ["handoff_to 'x': no handoff"],
                                "latency_ms": None})
    table = format_table([ScenarioReport(name="greets", passed=False, turns=[ok, bad])])
    lines = table.splitlines()
    assert lines[1].split()[:5] == ["greets", "1", "pass", "812", "ms"]
    assert lines[2].split()[:4] == ["2", "FAIL", "-", "desk"]
    assert lines[2].endswith("handoff_to 'x': no handoff")
    assert lines[-1] == "0/1 scenarios passed"


async def test_the_judge_asks_a_backend_that_cannot_force_tools_all_the_same():
    class PlainLLM:
        async def chat(self, messages, tools=()):
            yield LLMDelta(text="No, it does not greet.")

    verdict = await judge(PlainLLM(), "greets", "Bye.")
    assert not verdict and verdict.reason == "it does not greet."
