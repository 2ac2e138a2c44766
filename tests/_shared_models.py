"""Settings of the shared registry's models (``conftest.small_registry``), for tests that train a
model alike. Its own module: ``from conftest import ...`` would find whichever conftest.py was
imported first (``tests/serving`` has one too)."""

# One list block: every piece of the model is there (the ONNX export, the most expensive step
# of the shared fixtures, grows by about 1.3 s a block on the 2-core CI machine).
SMALL_TRANSFORMER = {"epochs": 1, "d_model": 32, "n_layers": 1, "d_ff": 64}
