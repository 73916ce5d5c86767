"""Bad experiment files and bad options: a one-line message and exit 2, never a traceback,
never a silently different experiment, nothing written (issue 10, items 7-10)."""

from __future__ import annotations

import copy
import json
import os
import resource
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.cli import main
from kubetune.spec import parse_experiment
from tests.local.test_run import KUBETUNE, experiment

BASE = experiment("bad", ["python", "train.py", "--x={{params.x}}"])


def document(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(BASE)
    result["spec"].update(changes)
    return result


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["trialTemplate"]["spec"]["containers"][0]


def refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str | bytes, *extra: str
) -> str:
    path = tmp_path / "experiment.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    for command in (["validate", str(path)], ["run", str(path), "--no-live", *extra]):
        if extra and command[0] == "validate":
            continue
        code = main(command)
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err
    assert not (tmp_path / ".kubetune").exists()  # nothing written
    return err


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def with_metadata(lines: list[str]) -> str:
    """The base experiment with `lines` as its trialTemplate.metadata."""
    block = "".join(f"      {line}\n" for line in lines)
    text = dump(BASE).replace("  trialTemplate:\n", f"  trialTemplate:\n    metadata:\n{block}")
    return text


def test_an_alias_bomb_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = with_metadata(lines)
    small = yaml.safe_load(with_metadata(lines[:3]))  # the same, defused, is a valid spec
    assert parse_experiment(small).spec.trialTemplate.metadata["a2"][0][0][0] == "x"
    err = refused(capsys, tmp_path, text)
    assert "expands to more than" in err


def test_non_utf8_bytes_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = dump(BASE).encode().replace(b"train.py", b"tr\xffin.py")
    err = refused(capsys, tmp_path, text)
    assert "not UTF-8 text (byte 0xff" in err


@pytest.mark.parametrize("depth", [300, 5000])
def test_very_deep_nesting_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, depth: int
) -> None:
    deep = "[" * depth + "]" * depth
    assert parse_experiment(yaml.safe_load(with_metadata(["a: [[[]]]"])))
    err = refused(capsys, tmp_path, with_metadata([f"a: {deep}"]))
    assert "nest" in err


def test_a_duplicate_key_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = dump(BASE).replace("  budget:\n", "  budget:\n    maxTrials: 3\n  budget:\n", 1)
    err = refused(capsys, tmp_path, text)
    line = text.splitlines().index("  budget:", text.splitlines().index("  budget:") + 1) + 1
    assert f"line {line}: duplicate key 'budget'" in err


def test_parameters_that_differ_only_in_case_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = document()
    doc["spec"]["parameters"][1]["name"] = "X"
    err = refused(capsys, tmp_path, dump(doc))
    assert "spec.parameters[1].name: 'X' and 'x' would both be passed as KUBETUNE_PARAM_X" in err


@pytest.mark.parametrize("text", ["--x={{params.x}", "--x={{x}}", "{{ param.x }}"])
def test_malformed_placeholders_are_refused_naming_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str
) -> None:
    doc = document()
    container(doc)["args"] = ["--y={{ params.y }}", text]
    err = refused(capsys, tmp_path, dump(doc))
    assert "spec.trialTemplate.spec.containers[0].args[1]: malformed placeholder" in err


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        ("env", [{"name": "A=B", "value": "1"}], "env[0].name"),
        ("env", [{"name": "A", "value": "1\x002"}], "env[0].value"),
        ("args", ["a\x00b"], "args"),
    ],
)
def test_values_a_process_cannot_be_given_are_refused_up_front(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, value: Any, field: str
) -> None:
    doc = document()
    container(doc)[where] = value
    err = refused(capsys, tmp_path, yaml.safe_dump(doc))
    assert f"spec.trialTemplate.spec.containers[0].{field}" in err


def test_a_missing_working_dir_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = document()
    container(doc)["workingDir"] = "no-such-dir"
    path = tmp_path / "experiment.yaml"
    path.write_text(dump(doc))
    assert main(["run", str(path), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert f"workingDir: '{tmp_path / 'no-such-dir'}' is not a directory" in err
    assert not (tmp_path / ".kubetune").exists()


@pytest.mark.parametrize(
    "target",
    [
        "missing/out.json",
        "folder",
        "experiment.yaml",  # was overwritten with the results: the experiment lost
    ],
)
def test_an_unwritable_output_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str
) -> None:
    (tmp_path / "folder").mkdir()
    path = tmp_path / "experiment.yaml"
    path.write_text(dump(document()))
    started = time.monotonic()
    assert main(["run", str(path), "--no-live", "-o", str(tmp_path / target)]) == 2
    assert time.monotonic() - started < 5
    assert "--output" in capsys.readouterr().err
    assert not (tmp_path / ".kubetune").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    assert path.read_text() == dump(document())


def test_a_state_dir_that_is_a_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(dump(document()))
    (tmp_path / "state").write_text("")
    assert main(["run", str(path), "--no-live", "--state-dir", str(tmp_path / "state")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_a_large_categorical_validates_in_linear_time() -> None:
    doc = document()
    values: list[Any] = [f"v{i}" for i in range(60_000)]
    doc["spec"]["parameters"].append({"name": "c", "type": "categorical", "values": values})
    started = time.monotonic()
    parse_experiment(doc)
    assert time.monotonic() - started < 2.0
    doc["spec"]["parameters"][-1]["values"] = [*values, 1, 1.5, True, "v59999"]
    with pytest.raises(ValueError, match="duplicate value 'v59999'"):
        parse_experiment(doc)


def _validate_bounded(target: Path) -> subprocess.CompletedProcess[str]:
    """`kubetune validate` in a child held to 20 s and 2 GiB, so that a regression (a
    FIFO read forever, /dev/zero read into memory) fails the test instead of the machine."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    try:
        return subprocess.run(
            [*KUBETUNE, "validate", str(target)],
            capture_output=True,
            text=True,
            timeout=20,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"kubetune validate {target} did not return")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom", "large"])
def test_a_file_that_never_ends_is_refused_at_once(tmp_path: Path, special: str) -> None:
    target = Path(special)
    if special == "fifo":
        target = tmp_path / "experiment.yaml"
        os.mkfifo(target)  # no writer: reading would wait forever
    elif special == "large":
        target = tmp_path / "experiment.yaml"
        target.write_text(dump(BASE) + "#" * (9 << 20))
    started = time.monotonic()
    result = _validate_bounded(target)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    expected = "larger than 8 MiB" if special == "large" else "not a regular file"
    assert expected in result.stderr
    assert time.monotonic() - started < 10


def test_output_onto_a_fifo_writes_into_it_and_keeps_it(tmp_path: Path) -> None:
    """A device or FIFO given as -o is written into: replacing it (as a rename does) turned
    /dev/null into a plain file when run as root."""
    path = tmp_path / "experiment.yaml"
    path.write_text(dump(experiment("fifo", ["python", "-c", "print('loss=1')"])))
    fifo = tmp_path / "results"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so writing can start
    try:
        assert main(["run", str(path), "--no-live", "-o", str(fifo)]) == 0
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        received = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert json.loads(received)["phase"] == "Succeeded"


def test_output_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(dump(experiment("link", ["python", "-c", "print('loss=1')"])))
    (tmp_path / "store").mkdir()
    link = tmp_path / "results.json"
    link.symlink_to(tmp_path / "store" / "results.json")
    assert main(["run", str(path), "--no-live", "-o", str(link)]) == 0
    assert link.is_symlink()
    assert json.loads((tmp_path / "store" / "results.json").read_text())["phase"] == "Succeeded"


def test_output_into_the_state_directory_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """-o .kubetune/NAME/events.jsonl replaced the run's history with its results."""
    path = tmp_path / "experiment.yaml"
    path.write_text(dump(experiment("own", ["python", "-c", "print('loss=1')"])))
    assert main(["run", str(path), "--no-live"]) == 0
    history = tmp_path / ".kubetune" / "own" / "events.jsonl"
    before = history.read_bytes()
    capsys.readouterr()
    assert main(["run", str(path), "--no-live", "-o", str(history)]) == 2
    assert "inside the state directory" in capsys.readouterr().err
    assert history.read_bytes() == before


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
def test_a_state_dir_holding_other_files_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fresh: list[str]
) -> None:
    """`--state-dir . --fresh` moved the whole project folder aside (as it would ~)."""
    project = tmp_path / "project"
    project.mkdir()
    path = project / "experiment.yaml"
    path.write_text(dump(experiment("mine", ["python", "-c", "print('loss=1')"])))
    (project / "train.py").write_text("# the user's code\n")
    code = main(["run", str(path), "--no-live", "--state-dir", str(project), *fresh])
    assert code == 2
    assert "holds files that are not kubetune's (experiment.yaml, train.py)" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert sorted(p.name for p in project.iterdir()) == ["experiment.yaml", "train.py"]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("maxTrials: 6", 'maxTrials: "6"', "spec.budget.maxTrials"),
        ("parallelTrials: 2", "parallelTrials: yes", "spec.budget.parallelTrials"),  # YAML 1.1
        ("min: -1.0", 'min: "-1"', "spec.parameters[0].min"),
    ],
)
def test_values_of_the_wrong_type_are_not_converted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, old: str, new: str, field: str
) -> None:
    """kubectl apply refuses these; a local run took "6" as 6 and `yes` as 1 trial at once."""
    text = dump(BASE)
    assert old in text
    err = refused(capsys, tmp_path, text.replace(old, new, 1))
    assert f"{field}: Input should be a valid" in err
