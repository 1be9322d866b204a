"""Helpers that make small synthetic datasets for tests and benchmarks."""
