"""National-scale data generator and benchmarks."""
