"""Modules over 450 lines and functions over 60 lines (def to last line, docstring included).

The house rules of issue 14: small modules with one job, short functions. Usage::

    python scripts/check_sizes.py [lit_matching] [--module-lines 450] [--function-lines 60]

Prints one line per module or function over its limit; exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def oversized(root: Path, module_lines: int, function_lines: int) -> list[str]:
    """``MODULE path: n lines`` and ``FUNCTION path:line name: n lines`` over the limits."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if (lines := len(text.splitlines())) > module_lines:
            found.append(f"MODULE {path}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > function_lines:
                    found.append(f"FUNCTION {path}:{node.lineno} {node.name}: {length} lines")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="lit_matching", type=Path)
    parser.add_argument("--module-lines", type=int, default=450)
    parser.add_argument("--function-lines", type=int, default=60)
    options = parser.parse_args()
    found = oversized(options.root, options.module_lines, options.function_lines)
    print("\n".join(found) or "nothing over the limits")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
