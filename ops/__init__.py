"""The operational layer: the ``ranker`` command line, the server launcher, the A/B client
and the online reports. It sits above ``serving`` so that imports run one way:
pipelines <- ranker <- serving <- ops (tests/test_layers.py checks it)."""
