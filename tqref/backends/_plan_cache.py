"""Tables a backend lays out from a Plan, built once per plan's data (numba and cuda share it).

A derived plan (``Plan.from_config``) holds exactly what its Config implies, so its tables
are cached per Config and shared by every derived plan of that Config. A plan with given
arrays (:meth:`tqref.reference.plan.Plan.with_data`, ``plan.given``) may hold different
arrays under the same Config, so its tables are cached per plan object, for as long as the
plan lives (a weak reference): never the tables of another plan.
"""

from __future__ import annotations

import threading
import weakref


class PlanCache:
    """``cache(plan)`` -> ``build(plan)``, built once as described in the module docstring.

    ``size``: derived plans' tables kept at most (then the per-Config cache starts over).
    """

    def __init__(self, build, size: int = 64):
        self._build = build
        self._size = int(size)
        self._derived: dict = {}
        self._given = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, plan):
        table, key = (self._given, plan) if plan.given else (self._derived, plan.config)
        found = table.get(key)
        if found is not None:
            return found
        built = self._build(plan)
        with self._lock:
            if table is self._derived and len(table) >= self._size:
                table.clear()
            return table.setdefault(key, built)

    def clear(self) -> None:
        """Forget every table (tests; the next call rebuilds)."""
        with self._lock:
            self._derived.clear()
            self._given.clear()
