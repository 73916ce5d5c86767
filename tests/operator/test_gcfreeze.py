"""What the operator holds from its start is left out of the collector's walks
(operator/gcfreeze.py), and is still freed when nothing refers to it."""

from __future__ import annotations

import gc
import weakref

from kubetune.operator.gcfreeze import freeze_what_exists


class Held:
    """A tracked object (its instance dict makes the collector walk it)."""


def test_objects_that_exist_at_the_freeze_are_never_walked_again_and_still_freed() -> None:
    already = gc.get_freeze_count()
    before = [Held() for _ in range(1000)]
    first = weakref.ref(before[0])
    try:
        frozen = freeze_what_exists()
        assert frozen >= already + 1000
        walked = {id(o) for o in gc.get_objects()}
        assert not any(id(o) in walked for o in before)  # a full collection skips them
        later = Held()
        assert any(o is later for o in gc.get_objects())  # what comes after is walked
        del before
        assert first() is None  # freed by reference counting, frozen or not
    finally:
        gc.unfreeze()
