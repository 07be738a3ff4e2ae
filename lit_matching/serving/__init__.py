"""Serving: the export format and the in-memory ``Retriever``."""
