"""`python -m edgeready COMMAND` (also the `edgeready` console script). Commands:

    merge OUT SHARD_DIR...   merge the reports of `pytest --shard I/N` runs into one (edgeready/merge.py)
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["merge"]:
        from edgeready.merge import main as merge

        return merge(args[1:])
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
