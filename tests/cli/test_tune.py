"""``lit-matching tune``: trials stored in SQLite, resumed, the best config fits; its errors."""

import sys
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml

from lit_matching import RetrievalEvaluator
from lit_matching.cli import main, run_cli, tune_command
from lit_matching.cli.configs import packaged_config
from lit_matching.cli.tune import (
    SetupError,
    TrialPruning,
    _packaged_space,
    check_space,
    make_pruner,
    trial_curve,
)
from lit_matching.cli.tune_space import load_space

#: One epoch of two training batches per trial, quiet.
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
]
USER_DIM = "model.init_args.user_tower.init_args.embedding_dim"
ITEM_DIM = "model.init_args.item_tower.init_args.embedding_dim"
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
        # every choice is checked, not only the first
        (
            "model.init_args.similarity: {type: categorical, choices: [cosine, cosin]}",
            r"'model.init_args.similarity' is not a setting of the config that takes 'cosin'",
        ),
        # linked keys: each one checked, each key set by one entry only
        (
            "data.num_negatives: {type: int, low: 2, high: 4, also: [data.num_negativs]}",
            r"'data.num_negativs' \(in the 'also' of 'data.num_negatives'\) is not a setting",
        ),
        (
            "data.num_negatives: {type: int, low: 2, high: 4, also: data.batch_size}",
            r"data.num_negatives: 'also' must be a non-empty list",
        ),
        (
            "data.num_negatives: {type: int, low: 2, high: 4, also: [data.num_negatives]}",
            r"'data.num_negatives', in the 'also' of 'data.num_negatives', is an entry's own key",
        ),
        (
            f"{USER_DIM}: {{type: int, low: 8, high: 16, also: [{ITEM_DIM}]}}\n"
            f"{ITEM_DIM}: {{type: int, low: 8, high: 16}}",
            rf"'{ITEM_DIM}', in the 'also' of '{USER_DIM}', is an entry's own key",
        ),
        (
            f"{USER_DIM}: {{type: int, low: 8, high: 16, also: [{ITEM_DIM}]}}\n"
            f"data.num_negatives: {{type: int, low: 8, high: 16, also: [{ITEM_DIM}]}}",
            rf"'{ITEM_DIM}', in the 'also' of 'data.num_negatives', is set by '{USER_DIM}'",
        ),
        (
            f"{USER_DIM}: {{type: int, low: 8, high: 16, also: [{ITEM_DIM}, {ITEM_DIM}]}}",
            r"is set by .* already \(listed twice\)",
        ),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(tmp_path, entry, message):
    (tmp_path / "space.yaml").write_text(entry)
    with pytest.raises(ValueError, match=message) as error:
        tune(tmp_path, 1)
    assert str(tmp_path / "space.yaml") in str(error.value)  # and the file
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


def test_the_pruner_waits_its_warmup_epochs():
    # The default pruner lets every trial validate --pruner-warmup epochs before it may stop one.
    study = optuna.create_study(direction="maximize", pruner=make_pruner(optuna, "median", 2))
    for _ in range(5):  # the median rule's 5 start-up trials
        done = study.ask()
        for epoch in range(4):
            done.report(0.5, epoch)
        study.tell(done, 0.5)
    behind = study.ask()
    verdicts = []
    for epoch in range(4):
        behind.report(0.1, epoch)
        verdicts.append(behind.should_prune())
    assert verdicts == [False, False, True, True]
    assert not any(make_pruner(optuna, "none", 0).prune(study, t) for t in study.trials)
    with pytest.raises(ValueError, match="--pruner-warmup has to be 0 or more epochs, got -1"):
        make_pruner(optuna, "median", -1)


def test_linked_keys_take_the_drawn_value_and_the_best_config_fits(tmp_path, monkeypatch):
    # Unlinked, a user tower of 16 or 32 and the config's item tower of 64 cannot train.
    (tmp_path / "space.yaml").write_text(
        f"{USER_DIM}: {{type: categorical, choices: [16, 32], also: [{ITEM_DIM}]}}\n"
        "model.init_args.learning_rate: {type: float, low: 0.01, high: 0.1, log: true}\n"
    )
    tune(tmp_path, 2)
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # the Optuna parameters: the entries' own keys only
        assert set(trial.params) == {USER_DIM, "model.init_args.learning_rate"}
    best = study.best_trial
    path = tmp_path / "study" / "best.yaml"
    model = yaml.safe_load(path.read_text())["model"]["init_args"]
    dims = [model[tower]["init_args"]["embedding_dim"] for tower in ("user_tower", "item_tower")]
    assert dims == [best.params[USER_DIM]] * 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-matching"])
    cli = run_cli(["fit", "--config", str(path)])
    assert cli.model.item_tower.embedding.embedding_dim == best.params[USER_DIM]
    (evaluator,) = [c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvaluator)]
    assert evaluator.results["val"]["recall@20"] == pytest.approx(best.value, rel=1e-6)


def test_a_trial_its_values_break_fails_and_the_study_goes_on(tmp_path, capsys):
    # A user tower of 32 does not meet the config's item tower of 64; one of 64 does.
    (tmp_path / "space.yaml").write_text(f"{USER_DIM}: {{type: categorical, choices: [32, 64]}}")
    tune(tmp_path, 3)  # the sampler's seed 0 draws both sizes in 3 trials
    trials = load(tmp_path).trials
    assert len(trials) == 3
    assert {t.params[USER_DIM] for t in trials} == {32, 64}
    for trial in trials:
        fails = trial.params[USER_DIM] == 32
        assert trial.state.name == ("FAIL" if fails else "COMPLETE")
        assert ("size of tensor" in trial.user_attrs.get("error", "")) == fails
    out = capsys.readouterr().out
    (failed, *_) = [t for t in trials if t.state.name == "FAIL"]
    (line,) = [line for line in out.splitlines() if line.startswith(f"trial {failed.number} ")]
    assert line.startswith(f"trial {failed.number} FAIL: RuntimeError: The size of tensor a (32)")
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    config = yaml.safe_load((tmp_path / "study" / "best.yaml").read_text())
    assert config["model"]["init_args"]["user_tower"]["init_args"]["embedding_dim"] == 64
    assert (
        f"trial {best.number}, val/recall@20 {best.value:.4f}"
        in (tmp_path / "study" / "best.yaml").read_text()
    )


@pytest.mark.parametrize(("trials", "run"), [(5, 3), (2, 2)])
def test_a_study_whose_first_trials_all_fail_stops(tmp_path, trials, run):
    (tmp_path / "space.yaml").write_text(f"{USER_DIM}: {{type: categorical, choices: [16, 32]}}")
    with pytest.raises(ValueError, match=rf"{run} trials in a row failed .* size of tensor"):
        tune(tmp_path, trials)
    assert [t.state.name for t in load(tmp_path).trials] == ["FAIL"] * run
    assert not (tmp_path / "study" / "best.yaml").exists()


def test_a_setup_error_stops_at_once(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    # a metric validation does not log: the first trial stops the study
    with pytest.raises(SetupError, match=r"'val/recall@7' was not logged"):
        tune(tmp_path, 3, "--metric=val/recall@7")
    assert len(load(tmp_path).trials) == 1
    # data that is not there: stopped before any trial
    other = tmp_path / "other"
    other.mkdir()
    (other / "space.yaml").write_text(SPACE)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        tune(other, 3, f"--data.interactions={tmp_path / 'nowhere.csv'}")
    assert not (other / "study").exists()


@pytest.mark.parametrize("name", ["listwise", "gowalla", "ml1m"])
def test_each_packaged_space_fits_its_config(name):
    # Every key (and linked key) of a packaged space, at every choice and both range ends, is a
    # setting of the packaged config of the same name: `tune --config NAME --space NAME` runs.
    space = load_space(_packaged_space(name))
    check_space(["--config", packaged_config(name)], space, name)
    assert space.distributions
