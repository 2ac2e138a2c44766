"""The lists dataset: one row per request, the contract between pipelines and models.

``manifest.py`` describes features; ``writer.py`` writes a dataset directory atomically;
``reader.py`` reads a split back as flat arrays with offsets.
"""
