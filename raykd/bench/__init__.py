"""Benchmarks behind ``raykd bench``: speed (``raykd.bench.speed``) and quality."""
