"""``lit-matching serve DIR``: serve an exported retriever over HTTP (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["serve_command"]


def serve_command(args: Sequence[str]) -> None:
    """``lit-matching serve DIR [--host H] [--port P] [--max-batch-size N] [--max-wait-ms T]``.

    Prints ``Serving DIR at http://HOST:PORT`` once the server listens, then serves until
    interrupted (Ctrl-C). The endpoints are described in :mod:`lit_matching.serving.http`.
    """
    parser = argparse.ArgumentParser(
        prog="lit-matching serve",
        description="Serve an exported retriever over HTTP: POST /recommend, "
        "POST /similar_items, POST /items, GET /health.",
    )
    parser.add_argument("directory", help="a directory written by fit or export")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    parser.add_argument(
        "--max-batch-size", type=int, default=64, help="most requests answered together"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="longest a request waits for others to join its batch (milliseconds)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    options = parser.parse_args(args)
    if options.max_batch_size < 1 or options.max_wait_ms < 0:
        parser.error("--max-batch-size must be >= 1 and --max-wait-ms >= 0")
    # Imported here: the other commands need no web server.
    from lit_matching.serving.http import serve

    serve(
        options.directory,
        host=options.host,
        port=options.port,
        max_batch_size=options.max_batch_size,
        max_wait_ms=options.max_wait_ms,
        log_level=options.log_level,
    )
