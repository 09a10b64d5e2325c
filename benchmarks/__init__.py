"""Benchmark scripts (`python benchmarks/<script>.py`) and the modules of the benchmark matrix they share."""
