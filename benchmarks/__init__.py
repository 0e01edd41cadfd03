"""Reproducible performance figures: each stage measured against its raw floor.

``python -m benchmarks`` (or ``electrocloud bench``) runs every benchmark and
writes ``docs/benchmarks.md``; ``--quick`` is the short run CI uses to keep the
harness working. See ``docs/benchmarks.md`` for the method.
"""
