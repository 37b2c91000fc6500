"""Benchmarks behind ``raykd bench``: speed (``raykd.bench.speed``), quality, sweeps
(``raykd.bench.sweep``) and the API."""

from raykd.core.errors import UserError


class BenchOptionError(UserError, ValueError):
    """A benchmark option (``--steps``, ``--rows``, ``--seeds``) that cannot be used."""
