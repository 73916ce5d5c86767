"""The two images, built without a container engine (there is none on CI's machine).

For each Dockerfile the test plays `docker build` step by step in an empty folder that
stands for the image's root: every absolute path outside the base image's system
folders (/opt/..., /src, /app) is moved under that folder. COPY takes exactly the paths
it names from the build context (the repository's tracked files, .dockerignore
applied), RUN lines run with the stage's ENV and WORKDIR, a second FROM starts a new
root and `COPY --from` copies from the earlier stage's. Then the image's own import
check (a RUN line) has run, and the ENTRYPOINT + CMD run as `docker run` would.

So a COPY of a path that is not in the context, a package the install lines forget
and an entry point that does not start all fail here.

Stand-ins, what this cannot verify:
* Base images: `python:3.11-slim` is a fresh virtualenv of this machine's python3
  (a 3.11); `pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime` is a fresh virtualenv plus
  torch. Their contents (CUDA, cuDNN, the conda python) are not checked.
* Torch: the stand-in is the torch (PyPI's build, with its dependency closure only) of
  the virtualenv running the tests, linked in rather than installed again (gigabytes).
  It also replaces the operator image's `pip install torch --index-url
  https://download.pytorch.org/whl/cpu`, an index this machine cannot reach.
* `useradd` lines are not run (no users are made on the host), USER and EXPOSE are
  not checked, and PIP_NO_CACHE_DIR is dropped so that pip's cache is shared.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.packaging import dockerfile as df
from tests.packaging.sandbox import checked, clean_clone, clean_env, new_venv
from tests.prereq import missing

# The base image's own folders: paths under them are the host's (the stand-in base).
SYSTEM_ROOTS = {"usr", "bin", "sbin", "lib", "lib64", "etc", "tmp", "dev", "proc", "sys", "var"}
TORCH_BASE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
BASES = {"python:3.11-slim": False, TORCH_BASE: True}  # image -> has torch
CPU_TORCH = re.compile(
    r"(\S+/pip) install torch --index-url https://download\.pytorch\.org/whl/cpu"
)
SKIPPED_RUNS = ("useradd ",)


@pytest.fixture(scope="session")
def torch_standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_torch_standin(tmp_path_factory.mktemp("torch-standin"))


def make_torch_standin(folder: Path) -> Path:
    """`folder` with torch and its dependency closure only: links into the
    site-packages of the test run's own torch."""
    try:
        importlib.metadata.distribution("torch")
    except importlib.metadata.PackageNotFoundError:
        missing("torch in the test virtualenv (scripts/bootstrap dev)")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen = ["torch"], set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".data")):
                continue  # no metadata: pip in the image never sees (or removes) these
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))))
    return folder


def link_torch(python: Path, standin: Path) -> None:
    """Makes the stand-in torch importable by `python` (a virtualenv), after its own
    site-packages."""
    site = checked([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    Path(site.stdout.strip(), "torch-standin.pth").write_text(f"{standin}\n")


@dataclass
class Stage:
    name: str
    root: Path
    env: dict[str, str]
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


@dataclass
class Build:
    """`docker build` of one Dockerfile, played in `work` (see the module doc)."""

    dockerfile: str
    context: Path
    context_files: list[str]
    work: Path
    torch: Path
    stages: dict[str, Stage] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.work / "image"

    def image_path(self, path: str, workdir: str = "/") -> Path:
        full = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
        parts = [p for p in full.split("/") if p not in ("", ".")]
        if parts and parts[0] in SYSTEM_ROOTS:
            return Path("/", *parts)
        return self.root.joinpath(*parts)

    def remap(self, text: str) -> str:
        """Absolute paths in a RUN or ENV text moved into the image folder (not URLs)."""
        return re.sub(r"(?<![\w:/.\-])/[\w.\-/]*", lambda m: str(self.image_path(m.group(0))), text)

    def run(self) -> Stage:
        stage: Stage | None = None
        for step in df.expand_args(df.parse(self.dockerfile)):
            where = f"Dockerfile line {step.line}: {step.keyword} {step.value}"
            if step.keyword == "FROM":
                stage = self.start(step.value, len(self.stages))
                continue
            assert stage is not None, f"{where}: before FROM"
            handler = getattr(self, f"do_{step.keyword.lower()}", None)
            assert handler is not None, f"{where}: this test does not emulate {step.keyword}"
            handler(stage, step.value, where)
        assert stage is not None, "no FROM"
        return stage

    def start(self, value: str, number: int) -> Stage:
        image, _, name = value.partition(" AS ")
        image = image.strip()
        assert image in BASES, f"no stand-in for base image {image} (add one to BASES)"
        if self.root.exists():  # the previous stage keeps its files for COPY --from
            self.root.rename(self.work / f"stage-{number - 1}")
            for earlier in self.stages.values():
                if earlier.root == self.root:
                    earlier.root = self.work / f"stage-{number - 1}"
        self.root.mkdir(parents=True)
        base_bin = new_venv(self.work / f"base-{number}")  # the base image's python
        if BASES[image]:
            link_torch(base_bin / "python", self.torch)
        env = {"PATH": f"{base_bin}:{clean_env()['PATH']}"}
        stage = Stage(name.strip() or str(number), self.root, env)
        self.stages[stage.name] = stage
        return stage

    def do_env(self, stage: Stage, value: str, where: str) -> None:
        for key, raw in df.env_pairs(value).items():
            expanded = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: stage.env.get(m.group(1) or m.group(2), ""),
                self.remap(raw),
            )
            stage.env[key] = expanded

    def do_workdir(self, stage: Stage, value: str, where: str) -> None:
        stage.workdir = str(Path(stage.workdir, value))
        self.image_path(stage.workdir).mkdir(parents=True, exist_ok=True)

    def do_copy(self, stage: Stage, value: str, where: str) -> None:
        copy = df.copy_args(value)
        many = len(copy.sources) > 1 or copy.dest.endswith("/")
        dest = self.image_path(copy.dest, stage.workdir)
        for source in copy.sources:
            if copy.from_stage is not None:
                assert copy.from_stage in self.stages, f"{where}: no stage {copy.from_stage}"
                origin = self.stages[copy.from_stage].root / source.lstrip("/")
                assert origin.exists(), f"{where}: {source} is not in stage {copy.from_stage}"
                shutil.copytree(origin, dest, symlinks=True, dirs_exist_ok=True)
                continue
            name = source.strip("/").removeprefix("./")
            name = "" if name == "." else name
            files = [
                f for f in self.context_files if not name or f == name or f.startswith(name + "/")
            ]
            assert files, f"{where}: {source} is not in the build context (.dockerignore applied)"
            for file in files:
                if file == name:  # a file: into dest/ or as dest
                    target = dest / Path(file).name if many else dest
                else:  # a folder's contents go into dest
                    target = dest / file[len(name) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.context / file, target)

    def do_run(self, stage: Stage, value: str, where: str) -> None:
        if value.startswith(SKIPPED_RUNS):
            return
        command = self.remap(value)
        if found := CPU_TORCH.search(command):  # the stand-in, linked into that venv
            link_torch(Path(found.group(1)).parent / "python", self.torch)
            command = CPU_TORCH.sub("true", command)
        workdir = self.image_path(stage.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=workdir,
            env=self.environment(stage),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{where}\n exited {done.returncode}:\n{done.stdout[-5000:]}"

    def environment(self, stage: Stage) -> dict[str, str]:
        env = {**clean_env(), **stage.env}
        env.pop("PIP_NO_CACHE_DIR", None)  # share pip's cache (see the module doc)
        return env

    def do_entrypoint(self, stage: Stage, value: str, where: str) -> None:
        stage.entrypoint = df.exec_form(value)

    def do_cmd(self, stage: Stage, value: str, where: str) -> None:
        stage.cmd = df.exec_form(value)

    def do_user(self, stage: Stage, value: str, where: str) -> None:
        pass  # not emulated (see the module doc)

    do_expose = do_user

    def docker_run(self, stage: Stage, *args: str, timeout: float = 300) -> str:
        """`docker run IMAGE [args]`: ENTRYPOINT + (args or CMD), in WORKDIR, with ENV."""
        command = [*stage.entrypoint, *(args or stage.cmd)]
        assert command, "the image has neither ENTRYPOINT nor CMD"
        executable = shutil.which(command[0], path=self.environment(stage)["PATH"])
        assert executable, f"{command[0]} is not on the image's PATH"
        return checked(
            [executable, *command[1:]],
            cwd=self.image_path(stage.workdir),
            env=self.environment(stage),
            timeout=timeout,
        ).stdout


def build(dockerfile: Path, context: Path, work: Path, torch: Path, text: str = "") -> Build:
    """`text` replaces the Dockerfile's (to check that a broken one fails)."""
    files = [str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()]
    return Build(
        text or dockerfile.read_text(), context, df.context_files(files, context), work, torch
    )


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return clean_clone(tmp_path / "clone")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_operator_image(clone: Path, tmp_path: Path, torch_standin: Path) -> None:
    image = build(clone / "Dockerfile", clone, tmp_path / "build", torch_standin)
    final = image.run()
    assert final.entrypoint == ["kubetune"]
    assert "usage: kubetune" in image.docker_run(final)  # CMD: --help
    # What manifests/deployment.yaml runs: `kubetune operator ...`.
    assert "--endpoint-url" in image.docker_run(final, "operator", "--help")
    assert not (image.root / "src").exists(), "the build stage's sources stay behind"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_trial_image(clone: Path, tmp_path: Path, torch_standin: Path) -> None:
    context = clone / "trial_image"
    image = build(context / "Dockerfile", context, tmp_path / "build", torch_standin)
    final = image.run()
    output = image.docker_run(final)  # CMD: python digits.py, by hand on CPU
    assert re.search(r"^step=10 val_loss=", output, re.MULTILINE), output[-3000:]


def test_docker_context_rules() -> None:
    rules = df.dockerignore("*\n!pyproject.toml\n!operator/\n**/__pycache__\n")
    assert df.in_context("pyproject.toml", rules)
    assert df.in_context("operator/kubetune/cli.py", rules)
    assert not df.in_context("operator/kubetune/__pycache__/cli.cpython-311.pyc", rules)
    assert not df.in_context("tests/conftest.py", rules)
    assert not df.in_context("Dockerfile", rules)
