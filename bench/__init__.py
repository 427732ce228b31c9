"""Benchmarks of the engine; `make bench` runs bench/run.py (not shipped in the wheel)."""
