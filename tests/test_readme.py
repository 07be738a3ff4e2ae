import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    """The README's Python blocks run one after another in one namespace, like a notebook."""
    blocks = python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    outputs = []
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
        outputs.append(capsys.readouterr().out)
    assert 0.0 < float(outputs[0].strip().splitlines()[-1]) <= 1.0  # test HR@50 of the model
    served = outputs[1]
    assert "user_id  rank  item_id" in served and "similar_item_id" in served
    assert (tmp_path / "my_retriever" / "meta.json").exists()


def test_readme_commands_are_the_ci_commands():
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]" && lit-matching fit' in README.read_text()
    assert 'pip install -q -e ".[dev]"' in ci
    assert "\npytest\n" in ci
    assert "lit-matching fit" in ci
