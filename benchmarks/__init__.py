"""Throughput benchmarks: every figure is a ratio against the conventional pipeline measured in the same run."""
