import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_example():
    assert python_blocks()


@pytest.mark.parametrize("block", python_blocks())
def test_readme_python_block_runs(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.strip().splitlines()
    assert 0.0 < float(printed[-1]) <= 1.0  # the example ends by printing test HR@50


def test_readme_commands_are_the_ci_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && lit-matching fit' in README.read_text()
    assert 'pip install -q -e ".[dev]"' in ci
    assert "\npytest\n" in ci
    assert "lit-matching fit" in ci
