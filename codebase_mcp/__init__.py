"""``python -m codebase_mcp``: the quickstart's way to start the server, as ``codebase-mcp serve``.

Only an entry point: everything lives in ``server/``, ``actors/`` and ``models/``.
"""
