"""jobqueue against saq, arq, bullmq and rq (issue 8), on one private redis-server.

    .venv/bin/python bench/compare.py            # the full run, about 10 minutes on 2 cores
    .venv/bin/python bench/compare.py --quick    # small sizes, for development; no file
    .venv/bin/python bench/compare.py --help     # queues, sizes

The first run creates the peers' virtual environments under bench/.peers/. The work is in
bench/peers/driver.py; this file only makes `bench` importable when started as a file.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.peers.driver import main as compare

    return compare()


if __name__ == "__main__":
    sys.exit(main())
