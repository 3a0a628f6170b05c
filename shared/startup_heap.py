"""The heap a long-running process built before serving: frozen out of the cyclic GC's scans.

Python's cyclic garbage collector walks every tracked object on a full (oldest
generation) collection.  A Jumpoint or a `jump open` has some 50 000 to 60 000
of them once it is ready (modules, classes, Twisted, pyOpenSSL, the config),
nearly all alive until the process ends, so each full collection costs tens of
milliseconds and lands in the middle of the traffic: a pause every connection
waiting at that moment shares, and under callgrind the largest single cost of
a few hundred tunnelled connections.  L{freeze_startup_heap} collects once
and then moves every surviving object to the permanent generation
(C{gc.freeze}), which collections no longer scan; objects made later are
collected as before.  Frozen objects are still freed by reference counting;
only a reference cycle among them would now stay (the startup heap has
none worth reclaiming: it lives as long as the process).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive now; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_heap"]
