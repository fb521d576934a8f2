"""`make bench` / `python -m bench`: every benchmark table, each with its in-run baseline."""

from __future__ import annotations

import logging

from bench.edge import main as edge_main
from bench.export import main as export_main
from bench.fleet import main as fleet_main
from bench.ingest import main as ingest_main
from bench.learning import main as learning_main


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    return edge_main([]) or export_main([]) or ingest_main([]) or fleet_main([]) or learning_main([])


if __name__ == "__main__":
    raise SystemExit(main())
