"""The ranker: models (LightGBM baseline, Transformer), training, metrics, registry, reports."""

__version__ = "0.1.0"
