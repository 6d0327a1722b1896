"""Herald's benchmark suite: every hot path beside the raw limit of the same machine, in the same run.

Run by `make bench` (or `python -m bench [figure ...] [--quick]`); never part of `make test`.
See docs/performance.md and bench/run.py.
"""
