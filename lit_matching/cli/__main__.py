"""``python -m lit_matching.cli``: the ``lit-matching`` command."""

from lit_matching.cli import main

main()
