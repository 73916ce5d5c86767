"""Checkpoints under ``KUBETUNE_CHECKPOINT_URI`` (docs/trial-protocol.md, "Checkpoints").

Layout: ``step-<8 digits>.ckpt`` objects plus ``latest``, which names the newest one and
is written only after that checkpoint is complete, so a crash in between leaves the
previous checkpoint the valid one. The SDK stores opaque bytes; what they hold (model,
optimizer, RNG states) is the training script's business.

Population-based training (``KUBETUNE_CHECKPOINT_INTERVAL`` set): ``checkpoint_due``
says when to save (before reporting each multiple of the interval), a member's
checkpoints are never deleted by the SDK (another member may be about to start from any
of them), and a member made by an exploit starts from the checkpoint its parent saved at
an exact step (``KUBETUNE_CHECKPOINT_FROM`` and ``_FROM_STEP``), never from anyone's
"latest", until it has saved one of its own.
"""

from __future__ import annotations

import logging
import os
import re

from . import env, interval, leave, shards
from .metrics import validate_step
from .storage import Store, open_store

log = logging.getLogger("kubetune_trial")

LATEST = "latest"
KEEP_VAR = "KUBETUNE_CHECKPOINT_KEEP"
DEFAULT_KEEP = 2
# \d+ rather than \d{8}: the name is zero-padded to 8 digits, but a step past 99,999,999
# simply gets more, and ordering is always by the parsed number, never by the name.
_NAME = re.compile(r"step-(\d+)\.ckpt")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def _step_of(name: str) -> int | None:
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _checkpoints(store: Store) -> dict[int, str]:
    """Step -> object name, from a listing (names are not assumed to be zero-padded)."""
    found: dict[int, str] = {}
    for name in store.names():
        step = _step_of(name)
        if step is not None:
            found[step] = name
    return found


def _keep(keep: int | None) -> int:
    if keep is None:
        raw = os.environ.get(KEEP_VAR)
        try:
            keep = int(raw) if raw else DEFAULT_KEEP
        except ValueError:
            raise ValueError(f"{KEEP_VAR} must be an integer, got {raw!r}") from None
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    return keep


def _store(uri: str | None) -> Store | None:
    uri = uri or env.trial_info().checkpoint_uri
    return open_store(uri) if uri else None


def save_checkpoint(
    data: bytes, step: int, *, keep: int | None = None, uri: str | None = None
) -> str:
    """Store ``data`` as the checkpoint of ``step`` and make it the latest one.

    Keeps the newest ``keep`` checkpoints (default ``KUBETUNE_CHECKPOINT_KEEP`` or 2).
    Checkpoints of steps after ``step`` are deleted: they belong to an earlier run of the
    trial that this one (restarted from scratch or from an older checkpoint) supersedes.
    ``uri`` overrides ``KUBETUNE_CHECKPOINT_URI``. Returns the checkpoint's URI.
    """
    step = validate_step(step)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"checkpoint data must be bytes, got {type(data).__name__}")
    keep = _keep(keep)
    store = _store(uri)
    if store is None:
        raise RuntimeError(
            f"{env.CHECKPOINT_URI} is not set: nowhere to save a checkpoint "
            "(set it to file:///some/dir or s3://bucket/prefix to save when run by hand)"
        )
    name = checkpoint_name(step)
    info = env.trial_info()
    if info.world_size > 1:
        # A distributed trial: this rank's shard (kubetune_trial/shards.py).
        own = shards.rank_store(store, info.rank)
        shards.write(own, name, bytes(data), info.attempt)
        if info.checkpoint_interval is None:
            complete = shards.complete_steps(store, info.world_size, _checkpoints)
            shards.prune(own, complete, step, keep, _checkpoints)
        interval.saved(step)
        leave.saved(step)  # each rank leaves once its own shard of the step is saved
        return f"{own.uri}/{name}"
    store.write(name, bytes(data))
    store.write(LATEST, name.encode())
    if env.trial_info().checkpoint_interval is None:
        # Under PBT nothing is pruned: a checkpoint at any interval step may be the one
        # another member was told to start from, and it may not have started yet.
        _prune(store, step, keep)
    interval.saved(step)
    leave.saved(step)  # told to leave its node: exits 143 now that the step is saved
    return f"{store.uri}/{name}"


def _prune(store: Store, step: int, keep: int) -> None:
    found = _checkpoints(store)
    steps = sorted(found)
    superseded = [s for s in steps if s > step]
    kept_history = [s for s in steps if s <= step]
    for old in superseded + kept_history[:-keep]:
        try:
            store.delete(found[old])
        except Exception as err:
            # The new checkpoint is already durable and `latest` names it; a leftover old
            # one only costs space, so it must not fail the save.
            log.warning("could not delete old checkpoint step %d: %s", old, err)


def load_checkpoint(*, uri: str | None = None) -> tuple[int, bytes] | None:
    """The latest checkpoint as ``(step, data)``, or None when there is none.

    ``latest`` decides. Should it name a checkpoint that is gone or malformed, the newest
    checkpoint present is used instead (with a warning) rather than silently training
    from scratch. ``uri`` overrides ``KUBETUNE_CHECKPOINT_URI``.
    """
    store = _store(uri)
    if store is None:
        return None
    info = env.trial_info()
    if info.world_size > 1:
        # This rank's shard of the newest step every rank saved in an earlier attempt.
        attempt = info.attempt if os.environ.get(env.ATTEMPT) else None
        return shards.load(store, info.rank, info.world_size, _checkpoints, attempt)
    pointer = store.read(LATEST)
    if pointer is None:
        return None
    name = pointer.decode("utf-8", errors="replace").strip()
    step = _step_of(name)
    data = store.read(name) if step is not None else None
    if step is not None and data is not None:
        return step, data
    found = _checkpoints(store)
    steps = sorted(found)
    log.warning(
        "%s/%s names %r, which is %s; using %s",
        store.uri,
        LATEST,
        name[:100],
        "missing" if step is not None else "not a checkpoint name",
        f"step {steps[-1]}" if steps else "no checkpoint",
    )
    for candidate in reversed(steps):
        data = store.read(found[candidate])
        if data is not None:
            return candidate, data
    return None


def checkpoint_due(step: int) -> bool:
    """Whether to save a checkpoint *before* reporting ``step``: at every multiple of
    ``KUBETUNE_CHECKPOINT_INTERVAL`` (population-based training ranks members there and
    may start others from exactly that checkpoint). False when no interval is set."""
    interval = env.trial_info().checkpoint_interval
    return interval is not None and validate_step(step) % interval == 0


class PinnedCheckpointMissing(RuntimeError):
    """The checkpoint this trial was told to start from is not there."""


def start_checkpoint() -> tuple[int, bytes] | None:
    """The checkpoint this attempt starts from, as ``(step, data)``, or None for a fresh
    start: its own latest when it resumes or has saved one (an interrupted member goes on
    from its own state and step), else the one another member saved at the pinned step
    (``KUBETUNE_CHECKPOINT_FROM`` / ``_FROM_STEP``: population-based training's exploit).

    A pinned checkpoint that is missing raises :class:`PinnedCheckpointMissing`: training
    from scratch, or from the other member's latest, would be silently wrong.
    """
    info = env.trial_info()
    own = load_checkpoint() if info.resume or info.checkpoint_from else None
    if own is not None or not info.checkpoint_from or info.checkpoint_from_step is None:
        return own
    step = info.checkpoint_from_step
    donor: Store = open_store(info.checkpoint_from)
    if info.world_size > 1:
        donor = shards.rank_store(donor, info.rank)
    data = donor.read(checkpoint_name(step))
    if data is None:
        raise PinnedCheckpointMissing(
            f"{info.checkpoint_from}/{checkpoint_name(step)}: the checkpoint this trial "
            f"starts from (step {step}) is missing"
        )
    return step, data
