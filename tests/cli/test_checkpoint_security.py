"""No entry point of the package unpickles code planted in a checkpoint (issue 13, point 1).

A real payload: an object whose ``__reduce__`` makes unpickling run a shell command that
creates a marker file. Every reader of checkpoints must refuse the file, and the marker must
never appear.
"""

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import synthetic_log

from lit_matching import IDEmbeddingTower, ListwiseMatching, MatchingModule
from lit_matching.cli import export_command, run_cli

PACKAGE = Path(__file__).resolve().parents[2] / "lit_matching"
SMALL = [
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.interactions=log.csv",
]
DATA = ["--data.interactions=log.csv"]
# Lightning warns that the checkpoint does not hold the callbacks' state; not the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")


class Payload:
    """Unpickling this runs ``touch MARKER`` in a shell."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def plant(checkpoint: Path, target: Path, marker: Path) -> Path:
    """A copy of a genuine checkpoint with a payload next to its (valid) entries."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["hyper_parameters"]["evil"] = Payload(marker)
    torch.save(content, target)
    return target


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-matching"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny fit on a synthetic log: (folder, its best checkpoint)."""
    folder = tmp_path_factory.mktemp("run")
    synthetic_log().to_csv(folder / "log.csv", index=False)
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(folder)
    sys.argv = ["lit-matching"]
    try:
        cli = run_cli(["fit", *SMALL])
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return folder, folder / cli.trainer.checkpoint_callback.best_model_path


@pytest.fixture
def poisoned(run, tmp_path, monkeypatch):
    """(planted checkpoint, marker its payload would create); cwd: the run's folder."""
    folder, checkpoint = run
    monkeypatch.chdir(folder)
    marker = tmp_path / "payload_ran"
    return plant(checkpoint, tmp_path / "poisoned.ckpt", marker), marker


def test_the_planted_payload_is_real(run, tmp_path):
    # The control: unpickling the planted file the unsafe way does run the command.
    marker = tmp_path / "control_ran"
    planted = plant(run[1], tmp_path / "control.ckpt", marker)
    torch.load(planted, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_export_refuses_a_checkpoint_with_code(poisoned, tmp_path):
    planted, marker = poisoned
    with pytest.raises(ValueError, match=re.escape(str(planted))) as error:
        export_command([*DATA, "--ckpt_path", str(planted), "--output", str(tmp_path / "out")])
    assert "posix.system" in str(error.value)  # what it would have run
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_export_command_line_refuses_it_with_a_message(poisoned, tmp_path):
    planted, marker = poisoned
    exe = shutil.which("lit-matching", path=os.path.dirname(sys.executable))
    assert exe, "the lit-matching console script is not installed"
    result = subprocess.run(
        [exe, "export", *DATA, "--ckpt_path", str(planted), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"lit-matching: error: {planted}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_lightning_subcommands_refuse_a_checkpoint_with_code(subcommand, poisoned):
    planted, marker = poisoned
    with pytest.raises(ValueError, match=re.escape(str(planted))):
        run_cli([subcommand, *SMALL, "--ckpt_path", str(planted)])
    assert not marker.exists()


@pytest.mark.parametrize("module", [MatchingModule, ListwiseMatching])
def test_load_from_checkpoint_refuses_a_checkpoint_with_code(module, poisoned):
    planted, marker = poisoned
    towers = {"user_tower": IDEmbeddingTower(40, 64), "item_tower": IDEmbeddingTower(30, 64)}
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system"):
        module.load_from_checkpoint(planted, map_location="cpu", **towers)
    assert not marker.exists()


def test_no_unsafe_deserialisation_in_the_package():
    # A new reader of user files must not open an unpickling path again.
    unsafe = re.compile(
        r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(|"
        r"torch\.load\((?![^)]*weights_only\s*=\s*True)|yaml\.load\(|yaml\.unsafe_load"
    )
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if unsafe.search(line) and not line.lstrip().startswith("#")
    ]
    assert not found, found
