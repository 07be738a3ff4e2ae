"""Issue 13, point 9: a nested list in an export's ``item_ids.json``.

The check belongs in ``lit_matching/retrieval/retriever.py`` (``_read_ids``), which another
change of issue 13 owns: this test fails there today with ``TypeError: unhashable type:
'list'`` and is marked so until that fix lands (then the marker goes).
"""

import json

import numpy as np
import pytest

from lit_matching.retrieval.retriever import Retriever


@pytest.mark.xfail(strict=True, raises=TypeError, reason="needs the check in _read_ids")
def test_nested_list_in_item_ids_json_names_file_and_entry(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    export = Retriever(vectors[:2], vectors, ["a", "b"], [7, 8, 9], "dot").export(tmp_path / "x")
    (export / "item_ids.json").write_text(json.dumps([7, [8, 1], 9]))
    with pytest.raises(ValueError, match=r"item_ids\.json.*\b(entry|position|index) 1\b"):
        Retriever.load(export)
