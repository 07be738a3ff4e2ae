"""``lit-matching prepare LOG --output DIR``: a log larger than memory, made ready to stream.

Runs :func:`~lit_matching.data.prepare.prepare_shards`; the folder it writes is what
``lit-matching fit --data.interactions DIR`` (or ``MatchingDataModule(interactions=DIR)``)
trains from.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["prepare_command"]


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON where it parses (``ratios=[0.8,0.1,0.1]``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def prepare_command(args: Sequence[str]) -> None:
    """Parse ``args`` and prepare the log (see the module)."""
    parser = argparse.ArgumentParser(
        prog="lit-matching prepare",
        description="Read an interaction log (.csv, .tsv, .parquet files or a folder of them) "
        "chunk by chunk and write training shards for streaming (memory bounded by a chunk).",
    )
    parser.add_argument("log", nargs="+", help="log file(s) or a folder of them")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--history-length", type=int, default=0, help="history items per row")
    parser.add_argument("--user-col", default="user_id")
    parser.add_argument("--item-col", default="item_id")
    parser.add_argument(
        "--time-col", default="auto", help="time column; 'none': row order (default: timestamp)"
    )
    parser.add_argument("--rating-col", default="rating")
    parser.add_argument("--min-rating", type=float, default=None)
    parser.add_argument("--duplicates", choices=["last", "first"], default="last")
    parser.add_argument("--split", default="leave_last_out")
    parser.add_argument(
        "--split-option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the split (repeatable), e.g. ratios=[0.8,0.1,0.1]",
    )
    parser.add_argument("--row-group-size", type=int, default=16384)
    parser.add_argument("--rows-per-bucket", type=int, default=1_000_000)
    parser.add_argument("--file-format", default="auto", choices=["auto", "csv", "tsv", "parquet"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    options = parser.parse_args(args)

    from lit_matching.data.prepare import prepare_shards

    output = prepare_shards(
        options.log[0] if len(options.log) == 1 else options.log,
        options.output,
        overwrite=options.overwrite,
        progress=False if options.no_progress else None,
        history_length=options.history_length,
        user_col=options.user_col,
        item_col=options.item_col,
        time_col=None if options.time_col.lower() == "none" else options.time_col,
        rating_col=options.rating_col,
        min_rating=options.min_rating,
        duplicates=options.duplicates,
        split=options.split,
        split_options=dict(options.split_option),
        row_group_size=options.row_group_size,
        rows_per_bucket=options.rows_per_bucket,
        file_format=options.file_format,
        seed=options.seed,
    )
    print(f"prepared {output}: train with --data.interactions {output}")
