"""The one decorator for the feature pipeline's compiled loops (numba).

Why compiled loops: at one request of a hundred candidates, an array version of a list feature
costs its number of numpy calls (a few microseconds each), not its arithmetic; a loop per
request has no such floor, and the batch pipeline runs the same loop over a day of requests,
so live and batch agree bit for bit by construction. The loops do the array version's float
operations in the same order (sums in row order, as ``np.bincount`` adds), so the features did
not change when they came in (checked bit for bit on the demo's state).

``cache=True``: compiled once per machine into ``__pycache__``, not per process (the server's
workers and the tests start many). ``nogil=True``: a request thread inside a loop lets the
other threads run.
"""

from __future__ import annotations

import numba

jit = numba.njit(cache=True, nogil=True)
