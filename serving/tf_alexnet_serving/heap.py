"""Python's garbage collector kept off the objects that live as long as the server.

With TensorFlow and a model loaded, the process holds about 360,000 objects that the collector
tracks, and each full (oldest-generation) collection walks all of them: measured on 2 cores with
d2l at 224 px, 32 clients, 4 full collections in 23 s of 170 ms each, every one stalling the
event loop for about two model calls (p99 260 ms against p50 96 ms). Frozen after start
(`gc.freeze`), they are left out of every collection; one of those then took 13 ms and the p99
fell to 118 ms. Reference counting still frees what is frozen; only reference cycles among
frozen objects wait for `collect_all`.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collects, then moves every object alive now out of the collector's sight; returns how
    many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_all() -> int:
    """A full collection that looks at the frozen objects too (a model version swapped out was
    frozen with the rest at start, and its graph is held in reference cycles), after which what
    lives is frozen again when it was before. Returns the unreachable objects found."""
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    found = gc.collect()
    if frozen:
        gc.freeze()
    return found


def thaw() -> None:
    """Gives the frozen objects back to the collector (the app stopped; the process goes on)."""
    gc.unfreeze()
