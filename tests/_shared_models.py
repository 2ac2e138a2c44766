"""Settings of the shared registry's models (``conftest.small_registry``), for tests that train a
model alike. Its own module: ``from conftest import ...`` would find whichever conftest.py was
imported first (``tests/serving`` has one too)."""

SMALL_TRANSFORMER = {"epochs": 1, "d_model": 32, "n_layers": 2, "d_ff": 64}
