"""`python -m edgeready.lm_eval run --model edgeready --model_args candidate=offload-default --tasks TASK ...`:
lm-eval's own command line, after registering the edgeready model; the shipped tasks are on the include path
unless --include_path names another folder (then both are)."""

from __future__ import annotations

import sys

import edgeready.lm_eval.model  # noqa: F401  (registers --model edgeready)
from edgeready.datasets.harness import SHIPPED_TASKS


def main(argv: list[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" in args:
        at = args.index("--include_path") + 1
        if at < len(args):
            args[at] = f"{args[at]},{SHIPPED_TASKS}" if str(SHIPPED_TASKS) not in args[at] else args[at]
    else:
        args += ["--include_path", str(SHIPPED_TASKS)]
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
