"""Benchmarks of Switchboard against the direct path; not part of the pass/fail suite.

Run each one from the repository root as ``.venv/bin/python -m bench.<name>``; see
``bench/README.md``.
"""
