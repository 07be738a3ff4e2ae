"""Plot a fit's learning curve from its CSV log: training loss and retrieval metrics by epoch.

Reads the ``metrics.csv`` a ``CSVLogger`` wrote (e.g. ``lit-matching fit --config gowalla``
writes ``lit_matching_runs/gowalla/version_0/metrics.csv``), prints the per-epoch table in
markdown and saves a PNG. Usage::

    python scripts/plot_learning_curve.py lit_matching_runs/gowalla/version_0/metrics.csv \\
        --metrics test/recall@20 test/ndcg@20 --out docs/img/gowalla_curve.png \\
        [--reference "SimpleX=0.1872,0.1557" --reference "LightGCN=0.1830,0.1554"]

A ``--reference NAME=v1,v2`` draws a dashed line per metric (in the order of ``--metrics``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def per_epoch(log: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean training loss and the last logged value of each metric, one row per epoch."""
    missing = [name for name in metrics if name not in log.columns]
    if missing:
        raise SystemExit(f"no column {missing} in the log; it has {sorted(log.columns)}")
    table = pd.DataFrame({"train/loss": log.groupby("epoch")["train/loss"].mean()})
    for name in metrics:
        table[name] = log.dropna(subset=[name]).groupby("epoch")[name].last()
    table.index = table.index + 1  # epochs completed
    return table


def markdown(table: pd.DataFrame) -> str:
    """The table in markdown, blanks where a metric was not evaluated."""
    lines = ["| epoch | " + " | ".join(table.columns) + " |", "|---" * (1 + table.shape[1]) + "|"]
    for epoch, row in table.iterrows():
        cells = ["" if pd.isna(value) else f"{value:.4f}" for value in row]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, metrics: list[str], references: list[str], out: Path) -> None:
    fig, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    loss_axis.plot(table.index, table["train/loss"], marker=".")
    loss_axis.set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    for name in metrics:
        points = table[name].dropna()
        line = metric_axis.plot(points.index, points.values, marker="o", label=name)[0]
        for reference in references:
            label, values = reference.split("=", 1)
            value = float(values.split(",")[metrics.index(name)])
            metric_axis.axhline(value, ls="--", lw=0.8, color=line.get_color())
            metric_axis.annotate(f"{label} {value:.4f}", (points.index[0], value), fontsize=7)
    metric_axis.set(xlabel="epoch", title="retrieval metrics")
    metric_axis.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_csv", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["test/recall@20", "test/ndcg@20"])
    parser.add_argument("--reference", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"))
    args = parser.parse_args()
    table = per_epoch(pd.read_csv(args.metrics_csv), args.metrics)
    print(markdown(table))
    plot(table, args.metrics, args.reference, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
