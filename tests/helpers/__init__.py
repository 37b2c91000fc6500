"""Shared test helpers (specs and files that several test modules build alike)."""
