"""The project's benchmarks: each prints its figures (ratios against a baseline measured in the
same script, on the same data)."""
