"""kopf's per-object memories, kept for none of the objects kubetune watches.

kopf keeps a `ResourceMemory` for every object it has seen an event of, until the object
is deleted: its memo's copy, an error throttler, daemon and index bookkeeping, about
1 KB each (tracemalloc, bench/scale.py). A 10,000-trial experiment has 10,000 HPOTrials
and some 15,000 pods that stay until the experiment is deleted, so kopf held about 25 MB
that none of kubetune's handlers reads: they are all `on.event` handlers, which take the
shared memo (the registry) and nothing else of it, never raise (the throttler never
throttles), and patch nothing through kopf (no remaining patch to retry). Daemons,
timers, indexes and the changing handlers (`on.create`, `on.update`, `on.resume`, …)
are what read a memory from one event to the next; kubetune has none, and
tests/architecture/test_kopf_handlers.py fails if one is added, since this would then
starve it.

kopf's own switch for this is the `ephemeral` recall its admission webhooks use (a
memory made for the event, not remembered); `kopf.run(memories=…)` is where an operator
hands kopf its memories container. The class is kopf's internal
`kopf._core.reactor.inventory.ResourceMemories` (kopf 1.45-1.45.x checked).
"""

from __future__ import annotations

from typing import Any

from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory


class EventOnlyMemories(ResourceMemories):
    """Memories that remember nothing: each event gets a fresh memory (with its own copy
    of the operator's memo, as kopf gives each object one)."""

    async def recall(  # type: ignore[override]  # kopf's signature, keyword-only as there
        self,
        raw_body: Any,
        *,
        memobase: Any = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True
        )
