"""Benchmarks: a load generator of our own and the four comparisons `make bench` prints (`python -m bench`)."""
