"""Traffic policies the ingress runs in-process: rewrite rules, tiers, splits, breakers, retries, rollouts.

Each is a small object with its inputs passed in (config, request features, a clock, a random source), so tests
need no cluster and no HTTP.
"""
