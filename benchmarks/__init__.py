"""Benchmarks: `make bench` runs them; they are not part of `dvc repro`."""
