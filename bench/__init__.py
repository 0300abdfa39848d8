"""Benchmarks that run against a real local stack: `python -m bench roundtrip`."""
