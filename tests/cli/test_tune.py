"""``lit-matching tune``: trials stored in SQLite, resumed, the best config fits; its errors."""

import sys
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml

from lit_matching import RetrievalEvaluator
from lit_matching.cli import main, run_cli, tune_command
from lit_matching.cli.tune import TrialPruning, trial_curve

#: One epoch of two training batches per trial, quiet.
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
]
SPACE = """
model.init_args.learning_rate: {type: float, low: 0.005, high: 0.1, log: true}
data.num_negatives: {type: int, low: 2, high: 16}
model.init_args.similarity: {type: categorical, choices: [cosine, dot]}
"""


def tune(folder, trials, *extra):
    tune_command(
        [
            "--config=listwise",
            f"--space={folder / 'space.yaml'}",
            f"--trials={trials}",
            f"--study-dir={folder / 'study'}",
            *TINY,
            *extra,
        ]
    )


def load(folder):
    return optuna.load_study(
        study_name="lit-matching", storage=f"sqlite:///{folder / 'study' / 'study.db'}"
    )


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Two trials, then the same command for one more (a resumed study)."""
    folder = tmp_path_factory.mktemp("tune")
    (folder / "space.yaml").write_text(SPACE)
    tune(folder, 2)
    first = [(t.number, t.params, t.value) for t in load(folder).trials]
    tune(folder, 1)
    return folder, first


def test_trials_run_are_stored_and_resumed(tuned):
    folder, first = tuned
    trials = load(folder).trials
    assert len(first) == 2 and len(trials) == 3  # the second call added one
    assert [(t.number, t.params, t.value) for t in trials[:2]] == first  # earlier ones kept
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert all(0 <= t.value <= 1 for t in trials)
    assert trials[2].params not in (first[0][1], first[1][1])  # the resume drew anew
    assert set(trials[0].params) == {
        "model.init_args.learning_rate",
        "data.num_negatives",
        "model.init_args.similarity",
    }
    for trial in trials:
        assert 0.005 <= trial.params["model.init_args.learning_rate"] <= 0.1
        assert trial.params["data.num_negatives"] in range(2, 17)
        assert list(trial.intermediate_values) == [0]  # one validation reported


def test_progress_lines_and_plot(tuned, tmp_path, capsys):
    folder, _ = tuned
    study = load(folder)
    # the curve: each trial's value and the running best, computed here independently
    best, expected = -1.0, []
    for trial in study.trials:
        best = max(best, trial.value)
        expected.append((trial.number, trial.value, "COMPLETE", best))
    assert trial_curve(study) == expected
    assert (folder / "study" / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tune(folder, 1)  # one more, to see its lines
    out = capsys.readouterr().out
    assert "3 trials so far, 1 to run" in out
    (line,) = [line for line in out.splitlines() if line.startswith("trial 3 ")]
    assert line.startswith("trial 3 COMPLETE val/recall@20 ")
    best = load(folder).best_trial
    assert f"best {best.value:.4f} (trial {best.number})" in line
    assert "model.learning_rate=" in line and "data.num_negatives=" in line
    assert "  trial 3 epoch 0: val/recall@20 " in out
    assert "lit-matching fit --config" in out


def test_best_config_fits_to_the_best_trial_value(tuned, tmp_path, monkeypatch):
    folder, _ = tuned
    best_trial = load(folder).best_trial
    path = folder / "study" / "best.yaml"
    text = path.read_text()
    assert f"trial {best_trial.number}, val/recall@20 {best_trial.value:.4f}" in text
    config = yaml.safe_load(text)
    params = best_trial.params
    assert config["model"]["init_args"]["learning_rate"] == params["model.init_args.learning_rate"]
    assert config["model"]["init_args"]["similarity"] == params["model.init_args.similarity"]
    assert config["data"]["num_negatives"] == params["data.num_negatives"]
    assert config["trainer"]["max_epochs"] == 1  # the tuning's own arguments are kept
    # The independent reference: a plain fit of the file reaches the trial's value.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-matching"])
    cli = run_cli(["fit", "--config", str(path)])
    (evaluator,) = [c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvaluator)]
    assert evaluator.results["val"]["recall@20"] == pytest.approx(best_trial.value, rel=1e-6)
    assert "recall@20" in evaluator.results["test"]  # the test part: scored by this fit


def test_a_resumed_study_keeps_its_metric(tuned):
    folder, _ = tuned
    with pytest.raises(ValueError, match=r"holds a study of .*val/recall@20.*another --study-dir"):
        tune(folder, 1, "--metric=val/ndcg@20")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("model.init_args.learning_rat: {type: float, low: 0.01, high: 0.1}", "learning_rat"),
        (
            "model.init_args.learning_rate: {type: float, low: 0.1, high: 0.01}",
            r"model.init_args.learning_rate: .*low",
        ),
        ("data.num_negatives: {type: integer, low: 1, high: 4}", r"data.num_negatives: expected"),
        ("data.num_negatives: {type: int, low: 1, high: 4, lg: true}", r"data.num_negatives: .*lg"),
        ("data.num_negatives: {type: categorical, choices: [a]}", r"'data.num_negatives' is not"),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(tmp_path, entry, message):
    (tmp_path / "space.yaml").write_text(entry)
    with pytest.raises(ValueError, match=message):
        tune(tmp_path, 1)
    assert not (tmp_path / "study").exists()  # refused before any trial


def test_the_command_reports_a_bad_space(tmp_path, monkeypatch, capsys):
    (tmp_path / "space.yaml").write_text("model.init_args.nope: {type: int, low: 1, high: 2}")
    argv = ["lit-matching", "tune", "--space", str(tmp_path / "space.yaml"), "--trials", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert "lit-matching: error: " in capsys.readouterr().err


def fake_trainer(value, epoch):
    metrics = {"val/recall@20": torch.tensor(value)}
    return SimpleNamespace(
        sanity_checking=False, callback_metrics=metrics, current_epoch=epoch, should_stop=False
    )


def test_trial_pruning_reports_and_stops_a_trial_behind_the_others():
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    leader = study.ask()
    for epoch, value in enumerate([0.2, 0.3]):
        leader.report(value, epoch)
    study.tell(leader, 0.3)
    ahead, behind = study.ask(), study.ask()
    keep, stop = TrialPruning(ahead, "val/recall@20"), TrialPruning(behind, "val/recall@20")
    trainers = fake_trainer(0.25, 0), fake_trainer(0.1, 0)
    keep.on_validation_end(trainers[0], None)
    stop.on_validation_end(trainers[1], None)
    assert (keep.pruned_at, trainers[0].should_stop, keep.best) == (None, False, 0.25)
    assert (stop.pruned_at, trainers[1].should_stop) == (0, True)
    assert study.trials[2].intermediate_values == {0: pytest.approx(0.1)}
    missing = TrialPruning(study.ask(), "val/recall@5")
    with pytest.raises(ValueError, match=r"'val/recall@5' was not logged.*val/recall@20"):
        missing.on_validation_end(fake_trainer(0.1, 0), None)
