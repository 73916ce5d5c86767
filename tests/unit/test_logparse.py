from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from unittest import mock

import aiohttp
import pytest

from kubetune.logparse import Line, LineSplitter, for_log, parse_metrics_line
from kubetune.operator.logs import LogStreams, report_lines


@pytest.mark.parametrize(
    ("line", "resource", "count", "expected"),
    [
        ("epoch=3 val_loss=0.41", "epoch", 1, (3, {"val_loss": 0.41})),
        ("val_loss=0.41 acc=0.9", "epoch", 4, (4, {"val_loss": 0.41, "acc": 0.9})),
        ("val_loss=0.41", None, 2, (2, {"val_loss": 0.41})),
        ("  loss=1e-3  ", None, 1, (1, {"loss": 0.001})),
        ("train.loss=2", None, 1, (1, {"train.loss": 2.0})),
        ("epoch=1000000000 loss=1", "epoch", 1, (10**9, {"loss": 1.0})),
    ],
)
def test_metric_lines(line, resource, count, expected) -> None:
    assert parse_metrics_line(line, resource, count) == expected


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Epoch 3: val_loss=0.41",
        "val_loss=high",
        "epoch=1.5 val_loss=0.3",
        "epoch=-1 val_loss=0.3",
        "=3",
        "3=val",
        "url=http://x",
        # Beyond what the report endpoint accepts (a step over 10^9, over 64 metrics).
        "epoch=1e300 val_loss=0.3",
        "epoch=1000000001 val_loss=0.3",
        " ".join(f"m{i}=1" for i in range(65)),
    ],
)
def test_other_lines_are_output(line: str) -> None:
    assert parse_metrics_line(line, "epoch", 1) is None


def test_nan_is_kept_so_the_engine_can_fail_the_trial() -> None:
    parsed = parse_metrics_line("epoch=2 val_loss=nan", "epoch", 1)
    assert parsed is not None and parsed[0] == 2 and math.isnan(parsed[1]["val_loss"])


# ----- splitting output into lines (issue 10: progress bars, endless lines) -------------


def split(chunks: list[bytes], max_bytes: int = 16) -> list[Line]:
    splitter = LineSplitter(max_bytes)
    return [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.close()


def test_lines_end_at_newline_carriage_return_or_both_even_across_chunks() -> None:
    lines = split([b"a\nb\r", b"\nc\rd", b"\r\n", b"e"])
    assert [(x.data, x.end) for x in lines] == [
        (b"a", b"\n"),
        (b"b", b"\r"),
        (b"c", b"\r"),
        (b"d", b"\r\n"),
        (b"e", b""),
    ]


def test_a_line_longer_than_the_cap_keeps_its_start_and_counts_the_rest() -> None:
    lines = split([b"x" * 10, b"y" * 10, b"z" * 10 + b"\nloss=1\n"])
    assert lines[0].data == b"x" * 10 + b"y" * 6 and lines[0].dropped == 14
    assert b"only its first 16 bytes are kept" in for_log(lines[0])
    assert (lines[1].data, lines[1].dropped) == (b"loss=1", 0)


class _Fake:
    """aiohttp's own StreamReader, fed as a pod log stream would be."""

    def __init__(self, data: list[bytes]) -> None:
        self.data = data
        self.status = 200

    async def __aenter__(self) -> _Fake:
        protocol = mock.Mock(_reading_paused=False)
        self.content = aiohttp.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
        for chunk in self.data:
            self.content.feed_data(chunk)
        self.content.feed_eof()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def follower(data: list[bytes]) -> LogStreams:
    streams = object.__new__(LogStreams)
    streams.host, streams.ssl, streams.headers = "https://api", None, {}
    session = mock.Mock()
    session.get = lambda *args, **kwargs: _Fake(data)
    streams.session = lambda: session  # type: ignore[method-assign]
    return streams


async def test_the_operator_s_log_follower_survives_progress_bars_and_endless_lines() -> None:
    bar = b"".join(b"\r%5d/20000 [progress ...........]" % i for i in range(20000))
    data = [bar, b"x" * (3 << 20), b"\nepoch=1 loss=2\nepoch=2 loss=1\n"]
    seen: list[tuple[int, dict[str, float]]] = []

    async def on_line(step: int, metrics: dict[str, float]) -> bool:
        seen.append((step, metrics))
        return True

    await asyncio.wait_for(follower(data).follow("ns", "pod", "c", "epoch", on_line), 10)
    assert seen == [(1, {"loss": 2.0}), (2, {"loss": 1.0})]


async def test_the_follower_reports_only_lines_with_the_objective_when_told_it() -> None:
    chatty = b"".join(b"iter=%d train_loss=0.5\n" % i for i in range(20000))
    seen: list[tuple[int, dict[str, float]]] = []

    async def on_line(step: int, metrics: dict[str, float]) -> bool:
        seen.append((step, metrics))
        return True

    await report_lines(_chunks([chatty, b"loss=1\n"]), None, on_line, objective="loss")
    assert seen == [(20001, {"loss": 1.0})]


async def _chunks(data: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in data:
        yield chunk
