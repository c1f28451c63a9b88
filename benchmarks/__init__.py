"""Performance benchmarks: every figure is a ratio against a side-by-side baseline, one run."""
