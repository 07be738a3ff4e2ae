"""Retrieval: metrics, FAISS search and the evaluation callback."""
