"""Reading a Dockerfile and its .dockerignore the way `docker build` does, for the
image tests that run without a container engine (pure functions, no I/O but reading)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest, continuation lines joined
    line: int  # where it starts, 1-based


def parse(text: str) -> list[Instruction]:
    """Instructions in order: comment lines dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # a comment inside a continued RUN does not end it, as in docker
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped.removesuffix("\\").strip() if continued else stripped)
        if not continued:
            keyword, _, value = " ".join(pending).partition(" ")
            out.append(Instruction(keyword.upper(), value.strip(), start))
            pending = []
    if pending:
        raise ValueError(f"line {start}: a continued instruction never ends")
    return out


def expand_args(instructions: list[Instruction]) -> list[Instruction]:
    """`ARG NAME=default` values substituted into later `${NAME}`/`$NAME` (defaults only,
    as a plain `docker build` uses them); the ARG lines themselves dropped."""
    values: dict[str, str] = {}
    out = []
    for instruction in instructions:
        if instruction.keyword == "ARG":
            name, _, default = instruction.value.partition("=")
            values[name.strip()] = default.strip().strip('"')
            continue
        value = re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: values.get(m.group(1) or m.group(2), m.group(0)),
            instruction.value,
        )
        out.append(Instruction(instruction.keyword, value, instruction.line))
    return out


def exec_form(value: str) -> list[str]:
    """ENTRYPOINT/CMD in JSON (exec) form; the shell form is refused (signals)."""
    words = json.loads(value)
    if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
        raise ValueError(f"not an exec-form list: {value}")
    return words


def env_pairs(value: str) -> dict[str, str]:
    """`ENV A=1 B="two words"` (and the legacy `ENV A value` form)."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str
    from_stage: str | None


def copy_args(value: str) -> Copy:
    words = shlex.split(value)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, flag_value = words.pop(0)[2:].partition("=")
        flags[name] = flag_value
    if set(flags) - {"from"}:
        raise ValueError(f"COPY flags this test does not emulate: {sorted(flags)}")
    if len(words) < 2:
        raise ValueError(f"COPY needs a source and a destination: {value}")
    return Copy(tuple(words[:-1]), words[-1], flags.get("from"))


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) rules, in order; the last rule matching a path or one of its
    parent folders decides (a `!` rule re-includes)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((not negated, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def context_files(files: Iterable[str], context: Path) -> list[str]:
    """The files (relative to `context`) `docker build` sends: .dockerignore applied."""
    ignore = context / ".dockerignore"
    rules = dockerignore(ignore.read_text()) if ignore.exists() else []
    return sorted(f for f in files if in_context(f, rules))
