"""Engines: one interface per role, several implementations, chosen per model version in the config."""
