"""Benchmarks of the load (``make bench``); see BENCHMARKS.md."""
