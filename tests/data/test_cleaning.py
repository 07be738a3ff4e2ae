import logging

import numpy as np
import pandas as pd
import pytest

from lit_matching.data.cleaning import drop_duplicates, k_core, keep_min_rating


def test_keep_min_rating(caplog):
    log = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3, 3],
            "item_id": [10, 11, 10, 12, 11],
            "rating": [4.0, 3.5, 5.0, np.nan, 2.0],
        },
        index=[9, 8, 7, 6, 5],
    )
    with caplog.at_level(logging.INFO):
        kept = keep_min_rating(log, 4)
    assert kept.to_dict("list") == {"user_id": [1, 2], "item_id": [10, 10], "rating": [4.0, 5.0]}
    assert kept.index.tolist() == [0, 1]
    assert len(log) == 5  # input untouched
    assert "lit_matching: keep_min_rating(rating >= 4)" in caplog.text
    assert "dropped 3 of 5 rows, 1 of 3 users, 2 of 3 items (1 with a missing rating)" in (
        caplog.text
    )
    with pytest.raises(ValueError, match=r"keep_min_rating: no column\(s\) \['stars'\]"):
        keep_min_rating(log, 4, rating_col="stars")


def test_drop_duplicates_by_time_and_row_order(caplog):
    log = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1, 2, 1],
            "item_id": [5, 5, 5, 6, 5, 5],
            "timestamp": [9, 3, 4, 1, 4, 3],
            "tag": ["a", "b", "c", "d", "e", "f"],
        }
    )
    with caplog.at_level(logging.INFO):
        last = drop_duplicates(log, keep="last")
    # (1, 5): times 9, 3, 3 -> last is t=9 ("a"), first is t=3 earliest row ("b").
    # (2, 5): times 4, 4 -> ties by row order: last "e", first "c".
    assert last.tag.tolist() == ["a", "d", "e"]
    assert drop_duplicates(log, keep="first").tag.tolist() == ["b", "c", "d"]
    assert drop_duplicates(log, time_col=None, keep="last").tag.tolist() == ["d", "e", "f"]
    assert drop_duplicates(log, time_col="when", keep="first").tag.tolist() == ["a", "c", "d"]
    assert "drop_duplicates(keep='last' by 'timestamp'): dropped 3 of 6 rows, 0 of 2 users" in (
        caplog.text
    )
    assert "by row order" in caplog.text
    with pytest.raises(ValueError, match="keep must be 'first' or 'last'"):
        drop_duplicates(log, keep="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no column\(s\) \['item'\]"):
        drop_duplicates(log, item_col="item")


def test_k_core_hand_example(caplog):
    # Round 1 drops items 6 and 9 (one row each); that leaves u3 with one row, dropped in
    # round 2; round 3 changes nothing. u1 and u2 keep items 7 and 8.
    log = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u1"],
            "item_id": [7, 6, 7, 8, 8, 9, 8],
        }
    )
    with caplog.at_level(logging.INFO):
        core = k_core(log, 2, 2)
    assert core.to_dict("list") == {"user_id": ["u1", "u2", "u2", "u1"], "item_id": [7, 7, 8, 8]}
    assert core.index.tolist() == [0, 1, 2, 3]
    assert (
        "lit_matching: k_core(min_user_interactions=2, min_item_interactions=2): stable after "
        "3 round(s), dropped 3 of 7 rows, 1 of 3 users, 2 of 4 items"
    ) in caplog.text


def reference_k_core(frame, min_user, min_item):
    """Slow loop: drop one offending row group at a time until every count holds."""
    rows = list(zip(frame.user_id, frame.item_id, range(len(frame)), strict=True))
    changed = True
    while changed:
        changed = False
        user_counts, item_counts = {}, {}
        for user, item, _ in rows:
            user_counts[user] = user_counts.get(user, 0) + 1
            item_counts[item] = item_counts.get(item, 0) + 1
        for user, count in user_counts.items():
            if count < min_user:
                rows = [row for row in rows if row[0] != user]
                changed = True
                break
        else:
            for item, count in item_counts.items():
                if count < min_item:
                    rows = [row for row in rows if row[1] != item]
                    changed = True
                    break
    return sorted(index for _, _, index in rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_core_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    size = 600
    # Skewed ids so some users / items fall below the thresholds and cascades happen.
    log = pd.DataFrame(
        {
            "user_id": rng.zipf(1.6, size) % 80,
            "item_id": [f"i{value}" for value in rng.zipf(1.4, size) % 120],
            "row": np.arange(size),
        }
    )
    for min_user, min_item in [(3, 3), (5, 2), (1, 6)]:
        core = k_core(log, min_user, min_item)
        expected = reference_k_core(log, min_user, min_item)
        assert len(expected) > 0
        assert core.row.tolist() == expected
        assert (core.groupby("user_id").size() >= min_user).all()
        assert (core.groupby("item_id").size() >= min_item).all()


def test_k_core_errors():
    log = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5]})
    with pytest.raises(
        ValueError,
        match=r"min_user_interactions=3, min_item_interactions=1.*"
        r"most active user has 2 rows, its most popular item 2",
    ):
        k_core(log, 3, 1)
    with pytest.raises(ValueError, match="min_item_interactions must be >= 0"):
        k_core(log, 1, -1)
    with pytest.raises(ValueError, match="missing ids"):
        k_core(pd.DataFrame({"user_id": [1, None], "item_id": [1, 2]}))
    assert k_core(log, 0, 0).equals(log)
