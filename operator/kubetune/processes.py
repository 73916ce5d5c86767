"""Process hygiene shared by everything kubetune starts.

Kept free of heavy imports: a helper process runs `start_helper` as soon as it is
unpickled, and the sooner it runs, the shorter the time it could outlive kubetune.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Mapping

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere).

    Runs in the child before it does any work, so a runner killed with SIGKILL leaves no
    trial or sampler process behind.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def processes_with_env(wanted: Mapping[str, str]) -> list[int]:
    """This user's processes started with every `wanted` variable in their environment
    (Linux's /proc; none elsewhere, and none for an empty `wanted`).

    How a trial's descendants are found after they left its session (setsid, a daemon's
    double fork), where signalling its process group does not reach: they keep the
    environment the trial was given.
    """
    needles = {f"{name}={value}".encode() for name, value in wanted.items()}
    if not needles:
        return []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    found: list[int] = []
    me = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environment = handle.read()
        except OSError:  # gone, or another user's
            continue
        if needles.issubset(environment.split(b"\0")):
            found.append(int(entry))
    return found


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit (the soft one is
    often 1024 while the hard one is far higher); (soft before, soft now).

    Each running trial holds files open in kubetune (its output, its log, a report
    connection): the limit caps how many can run at once.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft, soft
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, wanted


def start_trial(open_files: int) -> None:
    """Initializer of a trial process: it dies with kubetune, and gets back the open-file
    limit kubetune was given (code using select() relies on staying under 1024)."""
    die_with_parent()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))


def start_helper(parent: int, env: Mapping[str, str]) -> None:
    """Initializer of a helper process (the sampler worker): it goes when `parent` goes.

    `parent` is kubetune's PID as kubetune saw it: if kubetune died while this process
    was still starting, before the parent-death signal was asked for, it is already an
    orphan and leaves at once instead of staying forever.
    """
    die_with_parent()
    if os.getppid() != parent:
        os._exit(0)
    # Ctrl-C on a terminal reaches the whole foreground group: kubetune handles it and
    # closes its helpers; a helper's own KeyboardInterrupt would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # Belt and braces: a parent-death signal is tied to the thread that forked, so also
    # leave as soon as this process is orphaned (its parent id changes).
    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()
    os.environ.update(env)
