"""kopf's per-object memories, kept for none of the objects kubetune watches.

kopf keeps a `ResourceMemory` for every object it has seen an event of, until the object
is deleted: its memo's copy, an error throttler, daemon and index bookkeeping, about
1 KB each (tracemalloc). A 10,000-trial experiment has 10,000 HPOTrials and some 15,000
pods that stay until the experiment is deleted, so kopf held about 25 MB that none of
kubetune's handlers reads: they are all `on.event` handlers, which take the shared memo
(the registry: nothing is kept in it per object) and nothing else of the memory, patch
nothing through kopf (no remaining patch to carry), and catch their errors (kopf's error
throttler, kept in the memory, would only ever wait its first step now: it no longer
escalates). Daemons, timers, indexes and the changing handlers (`on.create`,
`on.update`, `on.resume`, …) do read a memory from one event to the next: under these
memories a daemon or timer would be started again at every event and never stopped, and
a resume handler would run at every relist. kubetune has none, and
tests/architecture/test_kopf_handlers.py fails if one is added.

kopf's own switch for this is the `ephemeral` recall its admission webhooks use (a memory
made for the event, not remembered); `kopf.run(memories=…)` is where an operator hands
kopf its memories container. The class is kopf's internal
`kopf._core.reactor.inventory.ResourceMemories` (kopf 1.45 checked): if a later kopf
moves it, the operator runs with kopf's own memories (and says so in its log) rather than
not start; if it adds options to `recall`, they are passed on.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

try:
    from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory
except ImportError:  # a kopf that moved its internals: see event_only_memories
    ResourceMemories = None  # type: ignore[assignment,misc]


if ResourceMemories is not None:

    class EventOnlyMemories(ResourceMemories):
        """Memories that remember nothing: each event gets a fresh memory (with its own
        copy of the operator's memo, as kopf gives each object one)."""

        async def recall(self, raw_body: Any, **options: Any) -> ResourceMemory:
            return await super().recall(raw_body, **{**options, "ephemeral": True})


def event_only_memories() -> Any:
    """An `EventOnlyMemories` for `kopf.run(memories=…)`, or None (kopf's own) where this
    kopf has no such internal class."""
    if ResourceMemories is None:
        logger.warning("this kopf has no ResourceMemories: it keeps a memory per object")
        return None
    return EventOnlyMemories()
