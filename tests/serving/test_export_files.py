"""Issue 13, point 9: a nested list in an export's ``item_ids.json``.

Before the fix: ``TypeError: unhashable type: 'list'``, naming neither the file nor the entry.
"""

import json

import numpy as np
import pytest

from lit_matching.serving.retriever import Retriever


def test_nested_list_in_item_ids_json_names_file_and_entry(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    export = Retriever(vectors[:2], vectors, ["a", "b"], [7, 8, 9], "dot").export(tmp_path / "x")
    (export / "item_ids.json").write_text(json.dumps([7, [8, 1], 9]))
    with pytest.raises(ValueError, match=r"item_ids\.json.*\b(entry|position|index) 1\b"):
        Retriever.load(export)


@pytest.mark.parametrize("bad", [None, True, {"id": 8}, float("nan")])
def test_other_non_ids_in_item_ids_json_are_refused(tmp_path, bad):
    vectors = np.eye(3, dtype=np.float32)
    export = Retriever(vectors[:2], vectors, ["a", "b"], [7, 8, 9], "dot").export(tmp_path / "x")
    (export / "item_ids.json").write_text(json.dumps([7, bad, 9]))
    with pytest.raises(ValueError, match=r"item_ids\.json: entry 1 is"):
        Retriever.load(export)
