"""Engine benchmarks: enqueue rate, end-to-end rate, outbox and command cost per job,
pickup latency, claim cost against queue depth, Redis memory per queued job, and the
ledger's shipping rate to each sink and scrubbing cost per event.

    .venv/bin/python bench/run.py            # the full run (`make bench`), about 4 minutes
    .venv/bin/python bench/run.py --quick    # small sizes, for development
    .venv/bin/python bench/run.py --help     # sections, sizes, profiling

The work is in bench/cli.py; this file only makes `bench` importable when it is started
as a file rather than with `python -m bench.run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    # First, even when already listed: started as a file, bench/ itself leads the path, and
    # its ledger.py would hide the ledger package.
    sys.path.insert(0, str(ROOT))
    from bench.cli import main as run_bench

    return run_bench()


if __name__ == "__main__":
    sys.exit(main())
