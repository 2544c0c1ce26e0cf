"""Benchmarks: each ``bench/bench_<part>.py`` has ``main(scale)`` printing figures as ratios to a baseline."""
