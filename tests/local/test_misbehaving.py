"""`kubetune run` under misbehaving trials and users (issue 10): no hang, no busy loop,
no process left behind, no second run on the same state."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.local.test_run import KUBETUNE, _alive, _cmdline, events, experiment, run, write

pytestmark = pytest.mark.slow


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return ["python", str(path)]


def wait_for(predicate, timeout: float = 60, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start(path: Path, **options: Any) -> subprocess.Popen[str]:
    """`kubetune run` in the background (output discarded unless told otherwise)."""
    options.setdefault("stdout", subprocess.DEVNULL)
    options.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(
        [*KUBETUNE, "run", str(path), "--no-live"], cwd=path.parent, text=True, **options
    )


def finish(path: Path) -> subprocess.CompletedProcess[str]:
    """Run it again with trials that no longer wait (they read TRIAL_SLEEP)."""
    return subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live"],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRIAL_SLEEP": "0"},
    )


def launched(state: Path) -> int:
    if not (state / "events.jsonl").exists():
        return 0
    return sum(e["type"] == "TrialLaunched" for e in events(state))


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
        found += children
        todo += children
    return found


def cpu_seconds(pid: int) -> float:
    """The process's own user+system CPU time (not its children's), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_progress_bars_and_endless_lines_do_not_hang_the_run(tmp_path: Path) -> None:
    """tqdm-style `\\r` redraws (1.3 MB, no newline) and a 3 MiB line without any end."""
    command = script(
        tmp_path,
        "bars.py",
        """
        import sys
        for i in range(20000):
            sys.stderr.write(f"\\r{i:5d}/20000 [progress bar .........................]")
        sys.stderr.flush()
        sys.stdout.write("x" * (3 << 20))
        sys.stdout.flush()
        print()
        print("loss=1")
        """,
    )
    path = write(tmp_path, experiment("bars", command, budget={"maxTrials": 1}))
    result = run(path, "--output", str(tmp_path / "out.json"), timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["trials"][0]["state"] == "Completed"
    assert results["trials"][0]["value"] == 1.0
    log = (tmp_path / ".kubetune/bars/logs/bars-0.attempt-1.log").read_bytes()
    assert b"19999/20000" in log
    assert b"only its first 65536 bytes are kept" in log
    assert len(log) < 2 << 20  # the endless line was cut, not stored whole


def test_the_runner_sleeps_while_its_trials_sleep(tmp_path: Path) -> None:
    command = script(tmp_path, "sleepy.py", "import time\ntime.sleep(6)\nprint('loss=1')\n")
    document = experiment(
        "sleepy", command, budget={"maxTrials": 2, "parallelTrials": 2}, algorithm="random"
    )
    path = write(tmp_path, document)
    state = tmp_path / ".kubetune" / "sleepy"
    runner = start(path)
    try:
        wait_for(lambda: launched(state) == 2, what="both trials to start")
        time.sleep(0.5)
        cpu_before, before = cpu_seconds(runner.pid), time.monotonic()
        time.sleep(4)
        used = cpu_seconds(runner.pid) - cpu_before
        share = used / (time.monotonic() - before)
        assert runner.poll() is None, "the trials ended before the measurement did"
        assert share < 0.05, f"kubetune used {share:.0%} of a core while its trials slept"
        assert runner.wait(timeout=30) == 0
    finally:
        runner.kill()


@pytest.mark.parametrize(
    ("code", "phase"), [("print('loss=0.5')", "Succeeded"), ("raise SystemExit(3)", "Failed")]
)
def test_running_a_finished_experiment_again_prints_its_results_at_once(
    tmp_path: Path, code: str, phase: str
) -> None:
    command = script(tmp_path, "once.py", code + "\n")
    budget = {"maxTrials": 1, "maxFailedTrials": 0}
    path = write(tmp_path, experiment("once", command, budget=budget, algorithm="random"))
    first = run(path, timeout=120)
    expected = 0 if phase == "Succeeded" else 1
    assert first.returncode == expected, first.stdout + first.stderr
    started = time.monotonic()
    again = run(path, "-o", str(tmp_path / "again.json"), timeout=30)
    assert time.monotonic() - started < 15
    assert again.returncode == expected, again.stdout + again.stderr
    assert "already ended" in again.stdout
    assert json.loads((tmp_path / "again.json").read_text())["phase"] == phase
    if phase == "Succeeded":
        assert "best trial once-0: loss=0.5" in again.stdout


def test_a_second_run_on_the_same_state_is_refused_and_kill_9_leaves_no_lock(
    tmp_path: Path,
) -> None:
    command = script(
        tmp_path,
        "wait.py",
        "import os, time\ntime.sleep(float(os.environ.get('TRIAL_SLEEP', '60')))\n"
        "print('loss=1')\n",
    )
    document = experiment("locked", command, budget={"maxTrials": 2, "parallelTrials": 2})
    path = write(tmp_path, document)
    state = tmp_path / ".kubetune" / "locked"
    first = start(path)
    try:
        wait_for(lambda: launched(state) == 2, what="the first run's trials")
        for extra in ([], ["--fresh"]):
            started = time.monotonic()
            second = run(path, *extra, timeout=90)
            assert second.returncode == 2, second.stdout + second.stderr
            assert time.monotonic() - started < 20
            assert f"in use by another kubetune run (pid {first.pid})" in second.stderr
        assert (state / "events.jsonl").exists()  # --fresh moved nothing away
        assert not list(tmp_path.glob(".kubetune/locked.old-*"))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    # The kernel released the lock with the process: the next run resumes and finishes.
    result = finish(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming locked" in result.stdout
    ended = [e for e in events(state) if e["type"] == "ExperimentEnded"]
    assert len(ended) == 1


def test_chatty_trials_are_not_throttled(tmp_path: Path) -> None:
    """20k `name=value` lines that are not the objective, then 20k that are."""
    body = """
        import sys
        for i in range(20000):
            print(f"iter={i} train_loss={1 / (i + 1)}")
        for i in range(1, 20001):
            print(f"step={i} loss={1 + 1 / i}")
        """
    command = script(tmp_path, "chatty.py", body)
    bare_start = time.monotonic()
    subprocess.run([sys.executable, command[1]], stdout=subprocess.DEVNULL, check=True)
    bare = time.monotonic() - bare_start
    scheduler = {"name": "none", "resource": "step"}
    document = experiment("chatty", command, budget={"maxTrials": 1}, scheduler=scheduler)
    path = write(tmp_path, document)
    result = run(path, "--output", str(tmp_path / "out.json"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    history = events(tmp_path / ".kubetune" / "chatty")
    start = next(e["at"] for e in history if e["type"] == "TrialLaunched")
    end = next(e["at"] for e in history if e["type"] == "AttemptEnded")
    assert end - start < max(5 * bare, 3.0), f"{end - start:.1f} s for a {bare:.2f} s script"
    reports = [e for e in history if e["type"] == "Reported"]
    assert len(reports) < 1000  # milestones and a few batches, not one per line
    trial = json.loads((tmp_path / "out.json").read_text())["trials"][0]
    assert trial["state"] == "Completed"
    assert trial["value"] == pytest.approx(1 + 1 / 20000)  # the last line's value
    assert trial["resource"] == 20000


def test_kill_9_of_kubetune_leaves_no_trial_helper_or_grandchild(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        "forks.py",
        """
        import subprocess, sys, time
        # A helper with its stdout closed, in the trial's process group.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(120)
        """,
    )
    document = experiment("orphans", command, budget={"maxTrials": 2, "parallelTrials": 2})
    path = write(tmp_path, document)
    state = tmp_path / ".kubetune" / "orphans"
    runner = start(path)
    try:
        wait_for(lambda: launched(state) == 2, what="both trials to start")
        wait_for(lambda: len(descendants(runner.pid)) >= 6, what="trials' own children")
        everything = descendants(runner.pid)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()
    wait_for(lambda: not any(_alive(p) for p in everything), timeout=10, what="no survivors")
    assert not {p: _cmdline(p) for p in everything if _alive(p)}


def test_a_trial_s_children_end_with_it(tmp_path: Path) -> None:
    """One child inherits stdout (it must not keep the trial running), one does not."""
    command = script(
        tmp_path,
        "parent.py",
        """
        import os, subprocess, sys
        for out in (None, subprocess.DEVNULL):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                     stdout=out)
            with open(f"child-{child.pid}", "w"):
                pass
        print("loss=1", flush=True)
        """,
    )
    path = write(tmp_path, experiment("kids", command, budget={"maxTrials": 1}))
    result = run(path, "--output", str(tmp_path / "out.json"), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out.json").read_text())["trials"][0]["state"] == "Completed"
    children = [int(p.name.removeprefix("child-")) for p in tmp_path.glob("child-*")]
    assert len(children) == 2
    wait_for(lambda: not any(_alive(p) for p in children), timeout=5, what="children to end")


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        "stubborn.py",
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # sits out the whole grace period
        time.sleep(120)
        """,
    )
    document = experiment("stubborn", command, budget={"maxTrials": 2, "parallelTrials": 2})
    path = write(tmp_path, document)
    state = tmp_path / ".kubetune" / "stubborn"
    runner = start(
        path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        wait_for(lambda: launched(state) == 2, what="both trials to start")
        time.sleep(0.5)
        # Ctrl-C on a terminal: SIGINT to the whole foreground process group.
        os.killpg(runner.pid, signal.SIGINT)
        time.sleep(1.0)
        started = time.monotonic()
        os.killpg(runner.pid, signal.SIGINT)
        output, _ = runner.communicate(timeout=30)
    finally:
        runner.kill()
    assert time.monotonic() - started < 5  # not the 10 s grace period
    assert runner.returncode == 130, output
    assert "Traceback" not in output
    ended = [e for e in events(state) if e["type"] == "AttemptEnded"]
    assert len(ended) == 2 and all(e["kind"] == "interrupted" for e in ended)


def test_a_resumed_run_prints_replayed_events_at_their_own_time(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        "later.py",
        "import os, time\ntime.sleep(float(os.environ.get('TRIAL_SLEEP', '60')))\n"
        "print('loss=1')\n",
    )
    path = write(tmp_path, experiment("later", command, budget={"maxTrials": 1}))
    state = tmp_path / ".kubetune" / "later"
    runner = start(path)
    try:
        wait_for(lambda: launched(state) == 1, what="the trial to start")
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()
    launch = next(e for e in events(state) if e["type"] == "TrialLaunched")
    wait_for(lambda: time.time() - launch["at"] > 2.5, what="the clock to move on")
    result = finish(path)
    assert result.returncode == 0, result.stdout + result.stderr
    stamp = time.strftime("%H:%M:%S", time.localtime(launch["at"]))
    assert f"{stamp} later-0 started" in result.stdout, result.stdout


def test_a_full_disk_stops_the_run_with_one_line_and_the_next_run_continues(
    tmp_path: Path,
) -> None:
    """Writes refused mid-run (here: a file size limit, as a full disk would) stop the run:
    no hang, no traceback, no trial counted as failed for kubetune's own disk; trial logs
    that cannot be written are given up while their reports are still read."""
    command = script(
        tmp_path,
        "steps.py",
        """
        import time
        for step in range(1, 4):
            print("noise " * 600, flush=True)  # the log outgrows the limit first
            print(f"step={step} loss={1 / step}", flush=True)
            time.sleep(0.3)
        """,
    )
    document = experiment("full", command, budget={"maxTrials": 4, "parallelTrials": 2})
    path = write(tmp_path, document)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    limited = subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_file_size,
    )
    assert limited.returncode == 2, limited.stdout + limited.stderr
    assert "Traceback" not in limited.stdout + limited.stderr
    assert "cannot write" in limited.stderr and "events.jsonl" in limited.stderr
    assert "failed" not in limited.stdout
    result = run(path, "-o", str(tmp_path / "out.json"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = json.loads((tmp_path / "out.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["Completed"] * 4
    assert [t["value"] for t in trials] == [1 / 3] * 4


def test_parallel_trials_are_held_to_the_open_file_limit(tmp_path: Path) -> None:
    """--parallel 1000 under `ulimit -n 128`: trials past the limit used to fail to start
    ("Too many open files") and count as failed trials."""
    command = script(tmp_path, "nap.py", "import time\ntime.sleep(2)\nprint('loss=1')\n")
    document = experiment(
        "files", command, budget={"maxTrials": 60, "parallelTrials": 2}, algorithm="random"
    )
    path = write(tmp_path, document)

    def limit_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    result = subprocess.run(
        [*KUBETUNE, "run", str(path), "--no-live", "--parallel", "1000", "-o", "out.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=limit_open_files,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running at most 16 trials at once, not 1000" in result.stdout
    trials = json.loads((tmp_path / "out.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["Completed"] * 60


ESCAPER = """
import os, signal, sys, time
# A child that leaves the trial's session (as a daemon does) and ignores SIGTERM:
# signalling the trial's process group no longer reaches it.
child = os.fork()
if child == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)
    os._exit(0)
with open(f"child-{child}", "w"):
    pass
print("loss=1", flush=True)
time.sleep(float(sys.argv[1]))
"""


@pytest.mark.parametrize("ending", ["trial exits", "kubetune killed"])
def test_a_trial_s_child_that_left_its_session_ends_with_it(tmp_path: Path, ending: str) -> None:
    command = script(tmp_path, "escaper.py", ESCAPER)
    command.append("0" if ending == "trial exits" else "120")
    path = write(tmp_path, experiment("escape", command, budget={"maxTrials": 1}))
    if ending == "trial exits":
        result = run(path, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        runner = start(path)
        try:
            wait_for(lambda: any(tmp_path.glob("child-*")), what="the trial's child")
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=10)
        finally:
            runner.kill()
    [child] = [int(p.name.removeprefix("child-")) for p in tmp_path.glob("child-*")]
    wait_for(lambda: not _alive(child), timeout=10, what="the child to end")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_the_runner_s_memory_does_not_grow_with_its_trials_long_lines(tmp_path: Path) -> None:
    """60 trials printing 20 lines of 64 KiB each: kept whole for a failure message, their
    tails held 78 MB in kubetune (gigabytes with more trials)."""
    command = script(
        tmp_path,
        "wide.py",
        """
        import os, sys, time
        while not os.path.exists("go"):
            time.sleep(0.05)
        for _ in range(20):
            sys.stdout.write("y" * 65536 + "\\n")
        sys.stdout.flush()
        while not os.path.exists("done"):
            time.sleep(0.05)
        print("loss=1")
        """,
    )
    document = experiment(
        "wide", command, budget={"maxTrials": 60, "parallelTrials": 60}, algorithm="random"
    )
    path = write(tmp_path, document)
    state = tmp_path / ".kubetune" / "wide"
    runner = start(path)
    try:
        wait_for(lambda: launched(state) == 60, what="all trials to start")
        time.sleep(1)
        before = rss_bytes(runner.pid)
        (tmp_path / "go").touch()
        logs = state / "logs"
        wait_for(
            lambda: sum(p.stat().st_size for p in logs.iterdir()) >= 60 * 20 * 65536,
            what="every trial's output",
        )
        time.sleep(1)
        grown = rss_bytes(runner.pid) - before
        (tmp_path / "done").touch()
        assert runner.wait(timeout=60) == 0
    finally:
        runner.kill()
    assert grown < 25 << 20, f"kubetune grew by {grown >> 20} MiB"


CHECKPOINTER = """
import os, signal, sys, time
def save(*_):
    open("checkpointed-" + os.environ["KUBETUNE_TRIAL"], "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
while not os.path.exists("done"):
    time.sleep(0.05)
print("loss=1")
"""


@pytest.mark.parametrize("hangup", ["default", "ignored (nohup)"])
def test_a_closed_terminal_stops_the_run_gracefully_unless_under_nohup(
    tmp_path: Path, hangup: str
) -> None:
    """SIGHUP killed kubetune outright: its trials got SIGKILL (parent-death signal) with
    no chance to save a checkpoint. Under nohup the run must go on."""
    command = script(tmp_path, "checkpointer.py", CHECKPOINTER)
    document = experiment("hangup", command, budget={"maxTrials": 2, "parallelTrials": 2})
    path = write(tmp_path, document)
    state = tmp_path / ".kubetune" / "hangup"
    disposition = signal.SIG_DFL if hangup == "default" else signal.SIG_IGN
    runner = start(path, preexec_fn=lambda: signal.signal(signal.SIGHUP, disposition))
    try:
        wait_for(lambda: launched(state) == 2, what="both trials to start")
        time.sleep(0.5)
        runner.send_signal(signal.SIGHUP)
        if hangup == "default":
            assert runner.wait(timeout=30) == 130
            assert len(list(tmp_path.glob("checkpointed-*"))) == 2
            ended = [e for e in events(state) if e["type"] == "AttemptEnded"]
            assert [e["kind"] for e in ended] == ["interrupted"] * 2
        else:
            time.sleep(1)
            assert runner.poll() is None
            (tmp_path / "done").touch()
            assert runner.wait(timeout=30) == 0
            assert not list(tmp_path.glob("checkpointed-*"))
    finally:
        runner.kill()


def test_a_reader_that_goes_away_does_not_stop_the_run(tmp_path: Path) -> None:
    """`kubetune run exp.yaml | head -1`: the closed pipe ended the run with exit code 1
    (a failed experiment, by kubetune's codes) and its trials interrupted."""
    command = script(tmp_path, "nap.py", "import time\ntime.sleep(0.3)\nprint('loss=1')\n")
    document = experiment("head", command, budget={"maxTrials": 4, "parallelTrials": 2})
    path = write(tmp_path, document)
    runner = start(path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert runner.stdout is not None and runner.stderr is not None
        runner.stdout.readline()
        runner.stdout.close()
        assert runner.wait(timeout=60) == 0, runner.stderr.read()
        assert "Traceback" not in runner.stderr.read()
    finally:
        runner.kill()
    ended = [e for e in events(tmp_path / ".kubetune" / "head") if e["type"] == "AttemptEnded"]
    assert [e["kind"] for e in ended] == ["exited"] * 4
