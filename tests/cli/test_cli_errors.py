"""The command line on user mistakes and unusual data (issue 13, points 6, 8, 11, 12, 13)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import synthetic_log

from lit_matching.cli import export_command, main, recommend_command, run_cli
from lit_matching.cli.commands import _raw_ids

QUIET = [
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
EXE = shutil.which("lit-matching", path=os.path.dirname(sys.executable))


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-matching"])


def fit_in(folder: Path, log: pd.DataFrame, *args: str):
    """``lit-matching fit`` on ``log`` (saved as ``folder/log.csv``), run in ``folder``."""
    log.to_csv(folder / "log.csv", index=False)
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(folder)
    sys.argv = ["lit-matching"]
    try:
        return run_cli(["fit", "--data.interactions=log.csv", *QUIET, *args])
    finally:
        os.chdir(cwd)
        sys.argv = argv


def lit_matching(*args: str, cwd: Path | None = None, **env: str):
    """The console script, run in a subprocess."""
    assert EXE, "the lit-matching console script is not installed"
    environment = {k: v for k, v in os.environ.items() if k != "LIT_MATCHING_TRACEBACK"}
    return subprocess.run(
        [EXE, *args],
        cwd=cwd,
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny fit: (its folder, run directory, best checkpoint)."""
    folder = tmp_path_factory.mktemp("run")
    cli = fit_in(folder, synthetic_log())
    run_dir = folder / "lit_matching_runs" / "listwise" / "version_0"
    return folder, run_dir, folder / cli.trainer.checkpoint_callback.best_model_path


def recommendations(capsys, directory: Path, *args: str) -> list[str]:
    capsys.readouterr()
    recommend_command([str(directory), *args])
    return capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------- 6: nothing to evaluate
def test_fit_without_validation_or_test_items_fails_before_training(tmp_path):
    # Every user has one interaction: leave-last-out keeps it for training.
    log = pd.DataFrame({"user_id": range(20), "item_id": [u % 7 for u in range(20)]})
    log["timestamp"] = range(20)
    with pytest.raises(ValueError, match=r"0 validation and 0 test") as error:
        fit_in(tmp_path, log)
    assert "leave_last_out" in str(error.value)  # the split that held nothing out
    assert "RetrievalEvaluator" in str(error.value)  # and how to train without it
    assert not list(tmp_path.rglob("metrics.csv"))  # no training started


# ---------------------------------------------------------------- 8: float ids
def test_float_ids_are_served_from_the_command_line(tmp_path, capsys, monkeypatch):
    log = synthetic_log()
    log["user_id"] = log["user_id"].str[1:].astype(float) + 0.5  # 0.5, 1.5, ...
    log["item_id"] = log["item_id"].astype(float)  # 0.0, 10.0, ...
    fit_in(tmp_path, log)
    exported = tmp_path / "lit_matching_runs" / "listwise" / "version_0" / "retriever"
    monkeypatch.setattr(sys, "argv", ["lit-matching", "recommend", str(exported)])
    sys.argv += ["--user", "1.5", "--user", "3.5", "--item", "10", "--k", "2"]
    capsys.readouterr()
    main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["1.5", "1"],
        ["1.5", "2"],
        ["3.5", "1"],
        ["3.5", "2"],
    ]
    assert lines[5].split()[:2] == ["item_id", "rank"]
    assert [line.split()[0] for line in lines[6:]] == ["10.0", "10.0"]


def test_raw_ids_take_the_type_of_the_vocabulary():
    assert _raw_ids(["1", "2"], [1, 2, 3]) == [1, 2]
    assert _raw_ids(["1.0", "2"], [1.0, 2.0]) == [1.0, 2.0]
    assert _raw_ids(["u1", "1"], ["u1", "1"]) == ["u1", "1"]
    assert _raw_ids(["1", "x"], [np.int64(1)]) == [1, "x"]  # "x": the lookup names it
    assert _raw_ids(["0.5"], [np.float32(0.5)]) == [0.5]
    assert _raw_ids(["1"], ["1", 1]) == ["1"]  # the first matching type wins
    assert _raw_ids(["1.0"], [1, 2]) == ["1.0"]  # no int is written "1.0": unknown


# ---------------------------------------------------------------- 11: messages, not tracebacks
def test_user_errors_print_one_message_and_exit_non_zero(run, tmp_path):
    # The console script itself, once: what a user sees on stderr and as the exit status.
    missing = lit_matching("recommend", str(tmp_path / "nowhere"), "--user", "u1")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"lit-matching: error: {tmp_path / 'nowhere'} is not")
    assert "Traceback" not in missing.stderr
    assert "LIT_MATCHING_TRACEBACK=1" in missing.stderr  # how to get the traceback


def main_fails(monkeypatch, capsys, *args: str) -> str:
    """``main()`` on ``args``: it must exit with status 1; its stderr."""
    monkeypatch.setattr(sys, "argv", ["lit-matching", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    return capsys.readouterr().err


def test_other_user_errors_print_their_message(run, tmp_path, monkeypatch, capsys):
    _, run_dir, _ = run
    monkeypatch.delenv("LIT_MATCHING_TRACEBACK", raising=False)
    unknown = main_fails(
        monkeypatch, capsys, "recommend", str(run_dir / "retriever"), "--user", "nobody"
    )
    assert unknown.startswith("lit-matching: error: unknown user id(s): 'nobody'")

    monkeypatch.chdir(tmp_path)
    bad_file = main_fails(monkeypatch, capsys, "fit", "--data.interactions", "missing.csv", *QUIET)
    assert bad_file.startswith("lit-matching: error:") and "missing.csv" in bad_file


def test_the_traceback_variable_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_MATCHING_TRACEBACK", "1")
    monkeypatch.setattr(
        sys, "argv", ["lit-matching", "recommend", str(tmp_path / "no"), "--user", "1"]
    )
    with pytest.raises(FileNotFoundError):  # propagates: Python prints its traceback
        main()


def test_unexpected_exceptions_keep_their_traceback(monkeypatch):
    # A bug (not a user error) propagates as is: its traceback is what a report needs.
    def broken(args):
        raise TypeError("a bug")

    import lit_matching.cli

    monkeypatch.setattr(lit_matching.cli, "recommend_command", broken, raising=False)
    monkeypatch.setattr(sys, "argv", ["lit-matching", "recommend", "x"])
    with pytest.raises(TypeError, match="a bug"):
        main()


# ---------------------------------------------------------------- 12: export over an export
def test_export_refuses_an_existing_output_unless_overwrite(run, tmp_path, capsys, monkeypatch):
    folder, run_dir, checkpoint = run
    monkeypatch.chdir(folder)
    existing = tmp_path / "existing"
    shutil.copytree(run_dir / "retriever", existing)
    (existing / "keep").write_text("the earlier export")
    args = [
        "--data.interactions=log.csv",
        "--ckpt_path",
        str(checkpoint),
        "--output",
        str(existing),
    ]
    with pytest.raises(FileExistsError, match=f"{re.escape(str(existing))}.*--overwrite"):
        export_command(args)
    assert (existing / "keep").read_text() == "the earlier export"
    export_command([*args, "--overwrite"])
    assert not (existing / "keep").exists()
    assert recommendations(capsys, existing, "--user", "u1") == recommendations(
        capsys, run_dir / "retriever", "--user", "u1"
    )


# ---------------------------------------------------------------- 13: a run's config exports it
def test_the_config_a_fit_saved_exports_that_run(run, tmp_path, capsys, monkeypatch):
    folder, run_dir, checkpoint = run
    monkeypatch.chdir(folder)
    assert "ckpt_path" in (run_dir / "config.yaml").read_text()  # a fit argument
    output = tmp_path / "new_dir"
    export_command(
        [
            "--config",
            str(run_dir / "config.yaml"),
            "--ckpt_path",
            str(checkpoint),
            "--output",
            str(output),
        ]
    )
    assert recommendations(capsys, output, "--user", "u1", "--k", "5") == recommendations(
        capsys, run_dir / "retriever", "--user", "u1", "--k", "5"
    )


def test_fit_with_validation_but_no_test_items_still_exports(tmp_path, capsys):
    # A time cut after the last interaction: validation holds items, test none. The run must
    # still evaluate what it can, export, and say that test was not evaluated.
    log = synthetic_log()
    cli = fit_in(
        tmp_path,
        log,
        "--data.split=time_cut",
        "--data.split_options={val_start: 6, test_start: 100}",
    )
    assert len(cli.datamodule.eval_set("test").users) == 0
    out = capsys.readouterr().out
    assert "no test interactions" in out
    assert re.search(r"^metric\s+val\s+val:popular$", out, re.MULTILINE)
    exported = tmp_path / "lit_matching_runs" / "listwise" / "version_0" / "retriever"
    assert (exported / "meta.json").is_file()
