"""Whose write is it: what the operator wrote (statuses and the resourceVersions its
writes made), to tell its own writes coming back on the watch from anyone else's, and
the statuses others wrote, whose added keys our next write clears
(`status.restoring_patch`). Bookkeeping only; kubetune.operator.writes does the writes."""

from __future__ import annotations

from collections import deque
from typing import Any

from kubetune.operator import store

# Versions of an object our writes made that its watch may still deliver.
VERSIONS_KEPT = 8


class Authorship:
    def __init__(self, body: dict[str, Any]) -> None:
        # Digests (`store.json_digest`) of the trial statuses written and being written.
        self.written_status: dict[int, bytes | None] = {}
        self.writing_status: dict[int, bytes | None] = {}
        # The last VERSIONS_KEPT of each trial: a list, not a deque (a deque's first block
        # is 624 bytes, about 6 MB at 10,000 trials for a handful of strings).
        self.trial_versions: dict[int, list[str]] = {}
        self.experiment_versions: deque[str] = deque(maxlen=VERSIONS_KEPT)
        self.experiment_versions.append((body.get("metadata") or {}).get("resourceVersion", ""))
        self.writing_experiment: dict[str, Any] | None = None
        # Statuses last seen written by someone else: our next write of each clears the
        # keys they added (`restoring_patch`). The experiment's stored status counts as
        # such until the first write after a load.
        self.foreign_trial_status: dict[int, Any] = {}
        self.foreign_experiment_status: Any = body.get("status")

    def trial_write_is_ours(self, number: int, body: dict[str, Any]) -> bool:
        """An HPOTrial's change is one of our writes: a version we made, or a status we
        wrote (or are writing)."""
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version in self.trial_versions.get(number, ()):
            return True
        seen = store.json_digest(body.get("status") or {})
        ours = (self.written_status.get(number), self.writing_status.get(number))
        return seen is not None and seen in ours

    def note_trial_version(self, number: int, version: str) -> None:
        """Trial `number`'s HPOTrial is at `version` by our write (or as we read it)."""
        versions = self.trial_versions.setdefault(number, [])
        versions.append(version)
        del versions[:-VERSIONS_KEPT]

    def trial_unchanged(self, number: int, digest: bytes | None) -> bool:
        """Trial `number`'s status of `digest` is what we wrote last, and no one else
        wrote since: a write of it would change nothing."""
        return (
            digest is not None
            and number not in self.foreign_trial_status
            and self.written_status.get(number) == digest
        )

    def wrote_trial(self, number: int, digest: bytes | None) -> None:
        """Trial `number`'s status of `digest` is written (and anyone else's undone)."""
        self.written_status[number] = digest
        self.writing_status.pop(number, None)
        self.foreign_trial_status.pop(number, None)

    def experiment_write_is_ours(
        self, body: dict[str, Any], last_status: dict[str, Any] | None
    ) -> bool:
        if (body.get("metadata") or {}).get("resourceVersion") in self.experiment_versions:
            return True
        seen = store.canonical(body.get("status") or {})
        ours = (last_status, self.writing_experiment)
        return any(s is not None and store.canonical(s) == seen for s in ours)
