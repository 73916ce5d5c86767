"""AWS faults for the tests: moto cannot throttle, so these make it look as if it did.

* `BotocoreFaults` — in-process, at the boto3 edge: a `before-send` handler on a client
  answers chosen operations with an error response *instead of sending the request*.
  botocore parses it and applies its retry policy exactly as for a real AWS answer, so
  tests see botocore's retries and then kubetune's own.
* `FaultProxy` — for an operator running as another process: a tiny HTTP proxy in front
  of moto's server (`AWS_ENDPOINT_URL` points at it) that answers chosen operations with
  `Throttling` / `ThrottlingException` or a 5xx while armed, and forwards everything else.
  It also records every operation it forwarded, with its parameters, so that tests can
  check what the operator asked AWS for (e.g. that no desired capacity exceeded max).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

QUERY_ERROR = (
    '<?xml version="1.0"?><ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>'
    "<Message>{message}</Message></Error><RequestId>kubetune-fault</RequestId></ErrorResponse>"
)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


@dataclass
class Fault:
    operation: str  # API name, e.g. SetDesiredCapacity ("*": any)
    code: str = "Throttling"
    status: int = 400
    times: int = 1_000_000  # how many requests it answers
    message: str = "Rate exceeded"

    def takes(self, operation: str) -> bool:
        return self.times > 0 and self.operation in ("*", operation)


@dataclass
class BotocoreFaults:
    """Attach to a boto3 client: `faults.attach(client)`; then `faults.add(Fault(...))`."""

    faults: list[Fault] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # every request botocore tried to send

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send", self._before_send)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        operation = event_name.rsplit(".", 1)[-1]  # before-send.<service>.<Operation>
        self.sent.append(operation)
        for fault in self.faults:
            if fault.takes(operation):
                fault.times -= 1
                kind = "Sender" if fault.status < 500 else "Receiver"
                body = QUERY_ERROR.format(kind=kind, code=fault.code, message=fault.message)
                return AWSResponse(request.url, fault.status, {}, _Raw(body.encode()))
        return None


@dataclass
class Forwarded:
    operation: str
    params: dict[str, Any]


class FaultProxy:
    """`FaultProxy(moto_url).start()`; `.url` is what AWS_ENDPOINT_URL should be."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.answered: list[tuple[str, str]] = []  # (operation, code) of injected faults
        self.forwarded: list[Forwarded] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def arm(self, *faults: Fault) -> None:
        with self.lock:
            self.faults = list(faults)

    def disarm(self) -> None:
        with self.lock:
            self.faults = []

    def calls(self, operation: str) -> list[dict[str, Any]]:
        with self.lock:
            return [f.params for f in self.forwarded if f.operation == operation]

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                operation, params = _operation(self.command, self.path, self.headers, body)
                fault = proxy._take(operation)
                if fault is not None:
                    self._fault(operation, fault)
                    return
                with proxy.lock:
                    proxy.forwarded.append(Forwarded(operation, params))
                self._forward(body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def _fault(self, operation: str, fault: Fault) -> None:
                with proxy.lock:
                    proxy.answered.append((operation, fault.code))
                if self.headers.get("Content-Type", "").startswith("application/x-www-form"):
                    kind = "Sender" if fault.status < 500 else "Receiver"
                    text = QUERY_ERROR.format(kind=kind, code=fault.code, message=fault.message)
                    data, content_type = text.encode(), "text/xml"
                    headers = {}
                else:  # REST-JSON (EKS): the code travels in a header
                    code = fault.code if fault.code != "Throttling" else "ThrottlingException"
                    data = json.dumps({"message": fault.message}).encode()
                    content_type, headers = "application/json", {"x-amzn-ErrorType": code}
                self.send_response(fault.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes) -> None:
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body or None, method=self.command
                )
                for key, value in self.headers.items():
                    if key.lower() not in ("host", "content-length", "connection"):
                        request.add_header(key, value)
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, headers, data = response.status, response.headers, response.read()
                except urllib.error.HTTPError as error:
                    status, headers, data = error.code, error.headers, error.read()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _take(self, operation: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.takes(operation):
                    fault.times -= 1
                    return fault
        return None


def _operation(method: str, path: str, headers: Any, body: bytes) -> tuple[str, dict[str, Any]]:
    """The API operation of a request, and its parameters (query or REST-JSON)."""
    if headers.get("Content-Type", "").startswith("application/x-www-form"):
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        return params.get("Action", "?"), params
    parts = urllib.parse.urlparse(path).path.strip("/").split("/")
    if method == "POST" and parts[-1:] == ["update-config"]:
        name = "UpdateNodegroupConfig"
    elif method == "GET" and len(parts) == 4 and parts[2] == "node-groups":
        name = "DescribeNodegroup"
    else:
        name = f"{method} /{'/'.join(parts)}"
    try:
        params = json.loads(body) if body else {}
    except ValueError:
        params = {}
    return name, params


Predicate = Callable[[str], bool]
