"""``python -m mapnb`` (and the ``mapnb`` command): ``mapnb notebooks PATH...``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mapnb`` command line; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"notebooks": "run Jupyter notebooks in parallel (mapnb notebooks --help)"}
    if not args or args[0] in ("-h", "--help"):
        print("usage: mapnb COMMAND ...\n\ncommands:")
        for name, what in commands.items():
            print(f"  {name:<10} {what}")
        return 0 if args else 2
    if args[0] not in commands:
        print(f"mapnb: error: unknown command {args[0]!r}; commands: {', '.join(commands)}", file=sys.stderr)
        return 2
    from .notebooks.cli import main as notebooks

    return notebooks(args[1:])


if __name__ == "__main__":
    sys.exit(main())
