"""Benchmarks, runnable as modules: ``python -m benchmarks.bench_sae``."""
