"""The indexing pipeline: Dramatiq actors and the libraries they use (scanning, chunking, embedders).

Importing this package or any of its modules sets nothing up: ``dramatiq actors.worker`` does
(:mod:`actors.worker`). Queues, one per stage so each can be scaled or placed on its own hosts:
``index.plan``, ``index.chunk``, ``index.embed``, ``index.write``, ``index.coordinate``.
"""
