"""Benchmarks: a load generator of our own and the five comparisons `make bench` prints (`python -m bench`)."""
