"""Benchmarks (printed figures and ratios, never timed tests): ``python -m experiments.bench {trace,edit,stats,all}``.

Each benchmark lives in its own module ``experiments.bench.<name>`` exposing ``main(argv)``.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = ("trace", "edit", "stats")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES + ("all",):
        print(f"usage: python -m experiments.bench {{{','.join(BENCHES)},all}} [options]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    names = BENCHES if argv[0] == "all" else (argv[0],)
    for name in names:
        importlib.import_module(f"experiments.bench.{name}").main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
