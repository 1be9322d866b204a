"""Benchmarks: `python -m dfd.bench NAME [flags]`, one module per NAME in this package."""
