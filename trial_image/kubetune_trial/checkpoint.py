"""Checkpoints under ``KUBETUNE_CHECKPOINT_URI`` (docs/trial-protocol.md, "Checkpoints").

Layout: ``step-<8 digits>.ckpt`` objects plus ``latest``, which names the newest one and
is written only after that checkpoint is complete, so a crash in between leaves the
previous checkpoint the valid one. The SDK stores opaque bytes; what they hold (model,
optimizer, RNG states) is the training script's business.
"""

from __future__ import annotations

import logging
import os
import re

from . import env
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
    store.write(name, bytes(data))
    store.write(LATEST, name.encode())
    _prune(store, step, keep)
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
