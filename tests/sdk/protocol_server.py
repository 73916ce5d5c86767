"""A minimal, real HTTP server side of docs/trial-protocol.md for testing the SDK.

It is the SDK's edge, not a copy of kubetune's ingest: enough protocol to answer the way
a real runner would (auth, 400/401/403/404/409, idempotent decisions), plus injectable
faults (statuses, dropped connections, delays) to exercise the client's retries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Fault:
    """What the server does to one request instead of (or before) answering it."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # then answer normally (or with status)
    drop: bool = False  # close the connection without any answer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    accepted: bool = False  # answered 200

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class TrialState:
    token: str
    attempt: int = 1


DecisionRule = Callable[[str, int, int], str]


class ProtocolServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.trials: dict[str, TrialState] = {}
        self.faults: list[Fault] = []
        self.requests: list[Received] = []
        self.decide: DecisionRule = lambda trial, attempt, step: "continue"
        self.reason = "test"
        # Steps answered "durable": false unless the report carries "flush": true.
        self.late_steps: set[int] = set()
        # (trial, attempt, step) -> decision: a repeated report gets the same answer.
        self.decided: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ProtocolServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_trial(self, name: str, token: str, attempt: int = 1) -> None:
        self.trials[name] = TrialState(token=token, attempt=attempt)

    def reports(self) -> list[dict[str, Any]]:
        """Bodies of the reports that were accepted (answered 200), in order."""
        with self._lock:
            return [r.json() for r in self.requests if r.accepted]

    # -- request handling -------------------------------------------------------------

    def _handle(self, received: Received) -> tuple[int, Any, dict[str, str]] | None:
        with self._lock:
            self.requests.append(received)
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                return None
            if fault.status is not None:
                return (
                    fault.status,
                    fault.body or {"error": f"injected {fault.status}"},
                    (fault.headers),
                )
        if not received.path.endswith("/v1/reports"):
            return 404, {"error": "no such path"}, {}
        status, answer = self._protocol(received)
        if status == 200:
            received.accepted = True
        return status, answer, {}

    def _protocol(self, received: Received) -> tuple[int, dict[str, Any]]:
        auth = received.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return 401, {"error": "missing bearer token"}
        token = auth.removeprefix("Bearer ")
        owner = next((n for n, t in self.trials.items() if t.token == token), None)
        if owner is None:
            # Echo the token on purpose: the SDK must scrub it from what it raises.
            return 401, {"error": f"unknown token {token}"}
        try:
            body = received.json()
            trial, attempt, step = body["trial"], body["attempt"], body["step"]
            metrics = body["metrics"]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "body must be JSON with trial, attempt, step, metrics"}
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            return 400, {"error": "step must be a non-negative integer"}
        if not isinstance(metrics, dict) or not all(
            isinstance(v, int | float) or v in ("nan", "inf", "-inf") for v in metrics.values()
        ):
            return 400, {"error": "metrics must map names to numbers"}
        if trial not in self.trials:
            return 404, {"error": f"unknown trial {trial}"}
        if trial != owner:
            return 403, {"error": f"token is not trial {trial}'s"}
        if attempt != self.trials[trial].attempt:
            return 409, {"error": f"attempt {attempt} is not the running attempt"}
        with self._lock:
            key = (trial, attempt, step)
            if key not in self.decided:
                self.decided[key] = self.decide(trial, attempt, step)
            decision = self.decided[key]
        answer: dict[str, Any] = {"decision": decision, "reason": self.reason}
        if step in self.late_steps and body.get("flush") is not True:
            answer["durable"] = False  # taken, written later (operator/writes.py)
        return 200, answer

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = Received(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                outcome = server._handle(received)
                if outcome is None:
                    self.close_connection = True
                    return
                status, answer, headers = outcome
                payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # The client gave up on a delayed answer; that is the test.

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
