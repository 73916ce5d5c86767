"""Leaving a node that is being taken away: checkpoint the step just reported, then exit.

Two things tell a trial its node is going: the operator's answer to a report
(``checkpointAndExit``: the Node carries a spot reclaim taint) and SIGTERM (the pod is
being deleted or drained; the handler is installed at the first report under kubetune,
only where the script kept Python's default). Either way the trial has its grace
period (two minutes on a spot reclaim) to save and go:

* with a checkpointer registered (``kt.set_checkpointer(fn)``, ``fn(step) -> bytes``),
  the SDK saves ``fn(step)`` as the checkpoint of the step just reported and exits with
  code 143 (what a process ended by SIGTERM returns);
* without one, ``report`` answers ``Decision.PAUSE``: the script's usual pause pattern
  (``kt.save_checkpoint(...)`` then ``break``) saves, and ``save_checkpoint`` exits with
  code 143 once the checkpoint is complete.

The operator counts the attempt as an interruption (not a failure, not a completion),
and the trial resumes on another node from that step.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("kubetune_trial")

EXIT_INTERRUPTED = 143  # 128 + SIGTERM

Checkpointer = Callable[[int], bytes]


class _State:
    leaving: str | None = None  # why, once told to leave
    armed: bool = False  # a report answered "pause" because of it: the next save exits
    checkpointer: Checkpointer | None = None
    installed: bool = False


_state = _State()


def set_checkpointer(checkpointer: Checkpointer | None) -> None:
    """Register ``checkpointer(step) -> bytes``: what to save when the trial must leave
    its node at once (see the module doc); None removes it."""
    if checkpointer is not None and not callable(checkpointer):
        raise TypeError(f"checkpointer must be callable, got {type(checkpointer).__name__}")
    _state.checkpointer = checkpointer


def leaving() -> str | None:
    """Why the trial must leave its node (None while it need not)."""
    return _state.leaving


def told(reason: str) -> None:
    if _state.leaving is None:
        log.warning("leaving this node: %s", reason)
        _state.leaving = reason


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    told("SIGTERM: checkpointing at the next report")


def install_sigterm() -> None:
    """Catch SIGTERM (once, from the main thread, where the script left the default)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    _state.installed = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def must_leave(step: int, stop: bool) -> bool:
    """After the answer to the report of `step`: whether the trial must leave now (the
    report then answers PAUSE). With a checkpointer, it saves and exits 143 here."""
    if _state.leaving is None or stop:
        return False
    _state.armed = True
    if _state.checkpointer is not None:
        from .checkpoint import save_checkpoint  # checkpoint imports this module

        save_checkpoint(_state.checkpointer(step), step)  # exits 143 once saved
        sys.exit(EXIT_INTERRUPTED)
    return True


def saved(step: int) -> None:
    """A checkpoint is complete: a trial told to leave at a report goes now."""
    if _state.armed:
        log.warning("checkpoint of step %d saved; exiting (%d) to resume elsewhere", step, 143)
        sys.exit(EXIT_INTERRUPTED)


def _reset_for_tests() -> None:
    _state.leaving = None
    _state.armed = False
    _state.checkpointer = None
