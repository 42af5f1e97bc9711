"""Benchmarks over the test rig, run from the checkout root as modules:
``python3 -m benchmarks.throughput``."""
