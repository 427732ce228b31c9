"""jobqueue against its peers (saq, arq, bullmq, rq) on one private redis-server.

`bench/compare.py` starts `driver.py`, which runs one module per queue in that queue's
virtual environment: `python -m bench.peers.<queue> measure` measures it and writes JSON,
and the same module's `worker` command is the worker process it measures. `protocol.py`
is what every module shares. This package imports nothing itself, so the peers' virtual
environments (which hold no jobqueue) can import its modules.
"""
