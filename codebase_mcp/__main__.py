"""``python -m codebase_mcp [FLAGS]`` is ``codebase-mcp serve [FLAGS]`` (stdio unless ``--transport http``);
``python -m codebase_mcp COMMAND ...`` is any other ``codebase-mcp`` command."""

from __future__ import annotations

import sys

from server.cli import main


def run(argv: list[str]) -> int:
    """``serve`` is the default command: it is put first when no command is named (nothing, or flags only)."""
    if not argv or argv[0].startswith("-"):
        argv = ["serve", *argv]
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
