"""Data side of the ranker: the simulated world, the log schema and the feature pipeline.

This package imports nothing from ``ranker`` or ``serving`` (they import it).
"""
