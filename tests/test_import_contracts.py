"""The layers of pyproject.toml's [tool.importlinter] hold, and break on a forbidden import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(folder: Path) -> subprocess.CompletedProcess:
    # lint-imports puts its working directory first on sys.path: a copy there is analysed
    # instead of the installed package.
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    command = command or shutil.which("lint-imports")
    assert command, "lint-imports not found: pip install -e '.[dev]'"
    return subprocess.run(
        [command, "--no-cache", "--no-logo"], cwd=folder, capture_output=True, text=True
    )


def test_the_package_keeps_its_layers():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _only_sources(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".py") and not Path(folder, n).is_dir()]


# (module, line added, the contract that breaks)
VIOLATIONS = [
    ("losses/objectives.py", "import lit_matching.modes", "losses is pure tensor maths"),
    ("towers/id.py", "from lit_matching.utils import progress", "towers imports only losses"),
    ("data/splits.py", "from lit_matching.towers import id", "data imports none of"),
    ("serving/retriever.py", "import lit_matching.modes.base", "retrieval and serving never"),
    ("modes/base.py", "from lit_matching.cli import main", "nothing imports cli"),
    ("retrieval/search.py", "import lit_matching", "no part imports the root package"),
    ("utils/progress.py", "from lit_matching.data import splits", "no import cycles"),
]


@pytest.mark.parametrize(("module", "line", "contract"), VIOLATIONS)
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "lit_matching", tmp_path / "lit_matching", ignore=_only_sources)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "lit_matching" / module
    # function-local, as a cycle would be hidden: the graph sees it all the same
    path.write_text(path.read_text() + f"\n\ndef _forbidden():\n    {line}\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    # "NAME BROKEN", or "NAME BROKEN (1 ignored import)" for a contract with ignore_imports
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
