"""Benchmarks behind ``raykd bench``: speed (``raykd.bench.speed``) and quality."""

from raykd.core.errors import UserError


class BenchOptionError(UserError, ValueError):
    """A benchmark option (``--steps``, ``--rows``, ``--seeds``) that cannot be used."""
