"""`make bench` / `python -m bench`: every benchmark table, each with its in-run baseline."""

from __future__ import annotations

import logging

from bench.edge import main as edge_main


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    return edge_main()


if __name__ == "__main__":
    raise SystemExit(main())
