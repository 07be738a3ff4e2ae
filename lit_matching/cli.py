"""The ``lit-matching`` command: LightningCLI over the matching modules and data.

``lit-matching fit`` with no arguments trains the list-wise model on the embedded MovieLens
data with the packaged ``listwise`` config, then evaluates the best checkpoint on validation
and test and prints a table of retrieval metrics next to the most-popular baseline.
``--config NAME`` selects a packaged config (``listwise``, ``pairwise``, ``pointwise``) or any
YAML file; every value can be overridden on the command line (``--trainer.max_epochs 5``).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from lit_matching.data.datamodule import MatchingDataModule
from lit_matching.modules import MatchingModule
from lit_matching.retrieval.evaluation import RetrievalEvaluator, most_popular_metrics

__all__ = [
    "MatchingCLI",
    "format_metrics_table",
    "main",
    "packaged_config",
    "packaged_configs",
    "run_cli",
]

_SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_CONFIG = "listwise"


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package.

    Example:
        >>> packaged_configs()
        ['listwise', 'pairwise', 'pointwise']
    """
    folder = files("lit_matching") / "configs"
    names = (p.name for p in folder.iterdir())
    return sorted(name.removesuffix(".yaml") for name in names if name.endswith(".yaml"))


def packaged_config(name: str) -> str:
    """Path of the packaged config ``name`` (with or without ``.yaml``)."""
    name = name.removesuffix(".yaml")
    if name not in packaged_configs():
        raise ValueError(f"no packaged config {name!r}; packaged: {packaged_configs()}")
    return str(files("lit_matching") / "configs" / f"{name}.yaml")


def _resolve_configs(args: list[str]) -> list[str]:
    """Map ``--config NAME`` to packaged files; add the default config to a bare subcommand."""
    resolved = list(args)
    has_config = False
    for i, arg in enumerate(resolved):
        flag, _, inline = arg.partition("=")
        if flag not in ("--config", "-c"):
            continue
        has_config = True
        value_at = i if inline else i + 1
        value = inline or (resolved[value_at] if value_at < len(resolved) else "")
        if value and not Path(value).exists() and value.removesuffix(".yaml") in packaged_configs():
            path = packaged_config(value)
            resolved[value_at] = f"{flag}={path}" if inline else path
    if not has_config and resolved and resolved[0] in _SUBCOMMANDS:
        resolved[1:1] = ["--config", packaged_config(DEFAULT_CONFIG)]
    return resolved


def format_metrics_table(columns: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per metric, one column per named result.

    Example:
        >>> print(format_metrics_table({"val": {"recall@10": 0.5}, "test": {"recall@10": 0.25}}))
        metric          val      test
        recall@10    0.5000    0.2500
    """
    names = list(dict.fromkeys(name for metrics in columns.values() for name in metrics))
    width = max(len("metric"), *(len(n) for n in names))
    widths = [max(8, len(title)) for title in columns]
    lines = [
        "metric".ljust(width) + "".join(f"  {t:>{w}}" for t, w in zip(columns, widths, strict=True))
    ]
    for name in names:
        cells = [
            f"  {metrics[name]:>{w}.4f}" if name in metrics else f"  {'-':>{w}}"
            for metrics, w in zip(columns.values(), widths, strict=True)
        ]
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


class MatchingCLI(LightningCLI):
    """LightningCLI that wires data vocabulary sizes into the towers and reports metrics."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the DataModule's vocabulary sizes into the towers' ``num_embeddings``."""
        for side in ("user", "item"):
            parser.link_arguments(
                f"data.num_{side}s",
                f"model.init_args.{side}_tower.init_args.num_embeddings",
                apply_on="instantiate",
            )

    def before_fit(self) -> None:
        """Start the wall clock of the run."""
        self._started = time.perf_counter()

    def after_fit(self) -> None:
        """Evaluate the best checkpoint on validation and test; print the metrics table."""
        trainer, model, datamodule = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            return
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        evaluator = next((c for c in callbacks if isinstance(c, RetrievalEvaluator)), None)
        if evaluator is None:
            return
        checkpoint = trainer.checkpoint_callback
        has_best = checkpoint is not None and bool(getattr(checkpoint, "best_model_path", None))
        ckpt_path = "best" if has_best else None
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        if not trainer.is_global_zero:
            return
        assert isinstance(datamodule, MatchingDataModule)
        baseline = most_popular_metrics(
            datamodule.item_counts, datamodule.eval_set("test"), evaluator.ks
        )
        table = format_metrics_table(
            {
                "val": evaluator.results["val"],
                "test": evaluator.results["test"],
                "test:popular": baseline,
            }
        )
        elapsed = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        print(
            f"\n{type(model).__name__} ({model.similarity.name}) on {datamodule.num_users} users x "
            f"{datamodule.num_items} items; full-catalogue ranking, seen items excluded; "
            f"checkpoint: {ckpt_path or 'last epoch'}\n"
            f"{table}\n"
            f"test:popular = most-popular unseen items for everyone. "
            f"Wall time: {elapsed:.1f} s\n"
        )


def run_cli(args: Sequence[str] | None = None) -> MatchingCLI:
    """Parse ``args`` (default ``sys.argv[1:]``), run the subcommand and return the CLI."""
    if args is None:
        # Resolve in place: DDP launches its worker processes with this very sys.argv.
        sys.argv[1:] = _resolve_configs(sys.argv[1:])
        argv = None
    else:
        argv = _resolve_configs(list(args))
    return MatchingCLI(
        MatchingModule,
        MatchingDataModule,
        subclass_mode_model=True,
        args=argv,
        parser_kwargs={"description": "Train and evaluate two-tower retrieval models."},
        auto_configure_optimizers=False,
    )


def main() -> None:
    """Entry point of the ``lit-matching`` console script."""
    # Deprecations inside Lightning's own calls (jsonargparse, torch pytree) are not the user's.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    run_cli()


if __name__ == "__main__":  # pragma: no cover
    main()
