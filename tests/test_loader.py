"""Agent files and backend options from the command line (voiceagent.loader)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import voiceagent
from voiceagent.errors import ConfigError
from voiceagent.loader import load_agent, parse_options

PACKAGE = Path(voiceagent.__file__).parent


def test_nothing_in_the_package_imports_the_command_line():
    """The CLI sits on top: the engines it starts (run, serve, sip) must not import it back."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if target == "cli" or target.endswith(".cli") or (
                        node.level and any(a.name == "cli" for a in node.names)):
                    offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"these modules import voiceagent.cli: {offenders}"


def test_options_are_typed_where_they_parse_as_json():
    assert parse_options(["beam_size=5", "language=en", "x=null", "on=true", "u=a=b"]) == {
        "beam_size": 5, "language": "en", "x": None, "on": True, "u": "a=b"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["beam_size"])


def test_an_agent_file_must_define_an_agent(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent("""
        from voiceagent import Agent
        def create_agent():
            return Agent("Be brief.")
    """))
    assert load_agent(good).instructions == "Be brief."
    bad = tmp_path / "bad.py"
    bad.write_text("agent = 42\n")
    with pytest.raises(ConfigError, match="define `agent = Agent"):
        load_agent(bad)
    with pytest.raises(ConfigError, match="no such agent file"):
        load_agent(tmp_path / "missing.py")
