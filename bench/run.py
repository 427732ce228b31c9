"""Engine benchmarks: enqueue rate, end-to-end rate, outbox and command cost per job,
pickup latency, claim cost against queue depth, and Redis memory per queued job.

    .venv/bin/python bench/run.py            # the full run (`make bench`), about 3 minutes
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
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.cli import main as run_bench

    return run_bench()


if __name__ == "__main__":
    sys.exit(main())
