"""Serving: the export on disk, the in-memory ``Retriever``, recommendations for anyone, HTTP.

A loaded export needs numpy, faiss and onnxruntime (and FastAPI + uvicorn for the server); no
module here imports torch or Lightning at import time except the training side
(``from_training``, ``tower_bundle``, ``tower_export``), which exports a trained model.
"""
