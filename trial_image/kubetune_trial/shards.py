"""Checkpoints of a distributed trial (``WORLD_SIZE`` > 1): one shard per rank.

Layout: ``<uri>/rank-<r>/step-<8 digits>.ckpt``, each rank writing only its own folder.
A step is checkpointed when *every* rank has its shard of it; ``load`` returns this
rank's shard of the newest such step, and resume uses nothing newer: a gang interrupted
while some ranks had saved step 8 and others not goes back to step 6 on all ranks.

Pruning keeps each rank's shards of the ``keep`` newest complete steps and anything
newer (a step other ranks are still saving); ``load`` deletes this rank's shards newer
than the step it returns, which a gang that was interrupted half-way through saving
left behind, so they can never complete a step with another attempt's shards.

Each shard has a marker, ``step-N.ckpt.attempt``, naming the attempt that wrote it
(written before the shard). A resume counts only shards of earlier attempts: ranks load
at different times, and a fast rank may already have saved the next step in this
attempt when a slow one loads; counting that shard would complete a step with the slow
rank's shard of an earlier attempt, and the ranks would resume from different steps. A
shard without a marker (written before markers existed) counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .storage import Store, open_store

log = logging.getLogger("kubetune_trial")

# Step -> object name of a store's checkpoints (checkpoint.py's listing).
StepsOf = Callable[[Store], dict[int, str]]


MARKER = ".attempt"


def rank_store(base: Store, rank: int) -> Store:
    return open_store(f"{base.uri}/rank-{rank}")


def write(own: Store, name: str, data: bytes, attempt: int) -> None:
    own.write(name + MARKER, str(attempt).encode())
    own.write(name, data)


def _written_before(own: Store, name: str, attempt: int) -> bool:
    marker = own.read(name + MARKER)
    if marker is None:
        return True
    try:
        return int(marker) < attempt
    except ValueError:
        return True  # unreadable: as a shard from before markers


def _delete(own: Store, step: int, name: str) -> None:
    try:
        own.delete(name)
        own.delete(name + MARKER)
    except Exception as err:  # the new shard is durable: a leftover only costs space
        log.warning("could not delete old checkpoint shard step %d: %s", step, err)


def complete_steps(
    base: Store, world_size: int, steps_of: StepsOf, before_attempt: int | None = None
) -> list[int]:
    """The steps every rank has a shard of, oldest first; with ``before_attempt``, only
    shards that earlier attempts wrote count."""
    common: set[int] | None = None
    for rank in range(world_size):
        own = rank_store(base, rank)
        found = steps_of(own)
        steps = set(found) if common is None else set(found) & common
        if before_attempt is not None:
            steps = {s for s in steps if _written_before(own, found[s], before_attempt)}
        common = steps
        if not common:
            return []
    return sorted(common or ())


def prune(own: Store, complete: list[int], step: int, keep: int, steps_of: StepsOf) -> None:
    """Delete this rank's shards that no resume can use (see the module docstring)."""
    found = steps_of(own)
    kept = [s for s in complete if s <= step][-keep:]
    oldest_kept = kept[0] if kept else None
    for old, name in found.items():
        if old > step or (oldest_kept is not None and old < oldest_kept):
            _delete(own, old, name)


def load(
    base: Store, rank: int, world_size: int, steps_of: StepsOf, attempt: int | None
) -> tuple[int, bytes] | None:
    """This rank's shard of the newest step every rank saved before ``attempt`` (any
    step when the attempt is not known: a script run by hand), or None."""
    own = rank_store(base, rank)
    complete = complete_steps(base, world_size, steps_of, before_attempt=attempt)
    found = steps_of(own)
    newest = complete[-1] if complete else None
    for stale in [s for s in found if newest is None or s > newest]:
        if attempt is None or _written_before(own, found[stale], attempt):  # not this one's
            _delete(own, stale, found[stale])
    for step in reversed(complete):
        data = own.read(found[step])
        if data is not None:
            return step, data
    return None
