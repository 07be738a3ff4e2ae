"""The embedded MovieLens ``ml-latest-small`` data set (GroupLens; see its ``README.txt``).

It ships inside the package under the terms of its ``README.txt``, which lies beside the data:
research use, no commercial use, redistribution only under the same conditions.
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

__all__ = ["load_movielens_small", "load_movielens_small_movies"]

_PACKAGE_DIR = files("lit_matching.data") / "ml-latest-small"


def load_movielens_small() -> pd.DataFrame:
    """Ratings of MovieLens ``ml-latest-small`` (100,004 ratings, 671 users, 9,066 movies).

    Returns:
        A frame with columns ``user_id`` and ``item_id`` (raw MovieLens ids), ``rating``
        (0.5-5 stars) and ``timestamp`` (seconds since the epoch), in file order.

    Example:
        >>> ratings = load_movielens_small()
        >>> ratings.shape, list(ratings.columns)
        ((100004, 4), ['user_id', 'item_id', 'rating', 'timestamp'])
    """
    with (_PACKAGE_DIR / "ratings.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip")
    return frame.rename(columns={"userId": "user_id", "movieId": "item_id"})


def load_movielens_small_movies() -> pd.DataFrame:
    """Movies of ``ml-latest-small``: ``item_id``, ``title`` and ``genres`` (``|``-joined).

    Example:
        >>> load_movielens_small_movies().set_index("item_id").loc[1, "title"]
        'Toy Story (1995)'
    """
    with (_PACKAGE_DIR / "movies.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip")
    return frame.rename(columns={"movieId": "item_id"})
