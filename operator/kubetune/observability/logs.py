"""Logs as one JSON object per line, for log pipelines (Loki, Elasticsearch, CloudWatch).

Each line has `time` (RFC 3339, UTC, milliseconds), `level`, `logger` and `message`,
plus `namespace` and `experiment` when the line is about one: from the log call's
`extra`, from kopf's object reference (`k8s_ref`), or from the context the handler
that is running bound with `bind_log_context`. An exception adds `exception`.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_CONTEXT: ContextVar[tuple[str, str] | None] = ContextVar("kubetune_log_context", default=None)

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_log_context(namespace: str | None, experiment: str | None) -> None:
    """Name the experiment the current task works on, for the JSON logs.

    Each asyncio task (a kopf handler, an HTTP request) has its own copy of the context,
    and tasks it creates inherit it, so this needs no undoing.
    """
    _CONTEXT.set((namespace or "", experiment or ""))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        namespace, experiment = _about(record)
        if namespace:
            document["namespace"] = namespace
        if experiment:
            document["experiment"] = experiment
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def _about(record: logging.LogRecord) -> tuple[str, str]:
    namespace = getattr(record, "namespace", None)
    experiment = getattr(record, "experiment", None)
    if namespace or experiment:
        return str(namespace or ""), str(experiment or "")
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("namespace"):
        name = ref.get("name") or ""
        return str(ref["namespace"]), str(name) if ref.get("kind") == "HPOExperiment" else ""
    return _CONTEXT.get() or ("", "")


def configure_logging(level: int, log_format: str = "text") -> None:
    """The root logger writes to stderr in `log_format`: `text` or `json`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
