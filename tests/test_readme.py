"""The README opens with the two commands a newcomer runs, and CI runs the second one."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("    ")][:2]


def test_readme_opens_with_setup_and_demo_then_setup_and_tests():
    demo, tests = _readme_commands()
    assert demo.startswith("./scripts/setup && ") and "demo" in demo
    assert tests == "./scripts/setup && .venv/bin/invoke ci"


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_ci_runs_the_readmes_demo_command_without_a_venv_on_path():
    ci = (ROOT / ".ci" / "run").read_text()
    line = next(line for line in ci.splitlines() if _readme_commands()[0] in line)
    assert line.startswith("env -u VIRTUAL_ENV PATH=") and "bash -c" in line
