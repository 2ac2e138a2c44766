"""Click logs to training lists, with one feature code path offline and online.

``state.FeatureState`` holds what features are computed from (item table, windowed counters,
behaviour sequences). ``batch`` replays the logs through it bucket by bucket to write the lists
dataset; ``live`` featurises one request against it for the server. Both call the same
``transforms``.
"""
