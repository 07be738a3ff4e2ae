"""Every public class and function of ``lit_matching`` shows an example (run as a doctest)."""

import inspect

import lit_matching

#: Public names still without an example in their docstring.
WITHOUT_EXAMPLE = {"MatchingModule"}  # an abstract base: its three subclasses have examples


def test_every_public_name_has_a_docstring_example():
    missing = {
        name
        for name in lit_matching.__all__
        if name != "__version__"
        and ">>>" not in (inspect.getdoc(getattr(lit_matching, name)) or "")
    }
    assert missing == WITHOUT_EXAMPLE, "add an Example: section (pytest runs it as a doctest)"
