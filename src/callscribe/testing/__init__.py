"""Helpers for tests and benchmarks: synthesised speech with known text."""
