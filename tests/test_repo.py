"""The repository keeps its promises: the README's commands, CI, compose file, examples."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from voiceagent import Agent
from voiceagent.loader import load_agent

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_ci_runs_the_readme_test_command():
    setup_and_demo, setup_and_test = readme_commands()
    assert setup_and_demo.startswith("scripts/setup.sh && ")
    assert setup_and_test.startswith("scripts/setup.sh --test && ")
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert setup_and_test in ci_lines


def test_the_demo_command_serves_an_agent_file_in_the_repository():
    demo = readme_commands()[0]
    assert " serve " in demo
    paths = re.findall(r"(examples/\S+)", demo)
    assert paths and all((REPO / p).is_file() for p in paths)


#: LiveKit entrypoints, not voiceagent agent files: tests/test_livekit.py runs them
LIVEKIT_EXAMPLES = REPO / "examples" / "livekit"


@pytest.mark.parametrize("example", sorted(p for p in (REPO / "examples").rglob("*.py")
                                           if LIVEKIT_EXAMPLES not in p.parents),
                         ids=lambda p: str(p.relative_to(REPO / "examples")))
def test_examples_define_an_agent(example):
    assert isinstance(load_agent(example), Agent)


def test_docker_compose_file_is_valid():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is installed by scripts/setup.sh --test"
    proc = subprocess.run([compose, "-f", "docker-compose.yml", "config", "-q"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
