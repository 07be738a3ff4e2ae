"""Interaction data: loading, ids, splits, negative sampling and the DataModule."""
