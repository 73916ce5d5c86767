"""What the operator holds from its start, left out of the cyclic collector's walks.

A full collection (CPython's generation 2) walks every object the collector tracks, and
the event loop stops meanwhile: in bench/scale.py's open loop (200 trials reporting
once a second, after a 1,000-trial experiment) about two every 10 s, 60-200 ms each
(p50 85 ms), and every report arriving meanwhile waits it out: the p99 of the reports
answered without a write. Most of what it walked had been there since the start (kopf,
the Kubernetes client's models, the imports) and lives as long as the process: frozen
once the operator has started, it is never walked again, and a full collection walks
only what came after (13-45 ms there, p50 about 25 ms).
"""

from __future__ import annotations

import gc


def freeze_what_exists() -> int:
    """Collect, then move every object left out of the collector's reach (`gc.freeze`):
    never walked again, still freed when nothing refers to it (only a reference cycle
    among them would stay; what exists at the start lives as long as the process).
    Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
