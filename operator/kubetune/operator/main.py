"""`kubetune operator`: runs the kopf operator with kubetune's settings."""

from __future__ import annotations

import argparse
import base64
import logging
import secrets
from pathlib import Path

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubetune import observability
from kubetune.capacity import operator as capacity  # registers the capacity loop's startup
from kubetune.operator import handlers
from kubetune.operator.controller import OperatorConfig
from kubetune.operator.kopfmemories import event_only_memories
from kubetune.operator.kube import Kube, load_client_config

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", help="watch this namespace (repeatable)")
    scope.add_argument("--namespace-all", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--listen", default="0.0.0.0:8080", help="host:port of the trial report endpoint"
    )
    parser.add_argument(
        "--endpoint-url",
        required=True,
        help="the report endpoint's URL as trial pods reach it, e.g. the operator Service's",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--token-key-file", type=Path, help="file holding the per-trial token key")
    key.add_argument(
        "--token-key-secret",
        default="kubetune-system/kubetune-token-key",
        help="NAMESPACE/NAME of the Secret holding the token key (created when missing)",
    )
    parser.add_argument(
        "--default-checkpoint-uri",
        help="s3://bucket/prefix (or file:// on a shared volume) for experiments naming none",
    )
    parser.add_argument(
        "--liveness", help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    parser.add_argument("--verbose", action="store_true")
    capacity.add_arguments(parser)  # node pools, AWS, cost
    parser.add_argument(
        "--log-format",
        choices=observability.LOG_FORMATS,
        default="text",
        help="json: one JSON object a line (time, level, logger, message, namespace, experiment)",
    )


def _parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--listen: expected HOST:PORT, got {text!r}")
    return host, int(port)


def _token_key(api: client.ApiClient, args: argparse.Namespace) -> bytes:
    if args.token_key_file is not None:
        key = args.token_key_file.read_bytes().strip()
    else:
        namespace, _, name = args.token_key_secret.partition("/")
        core = client.CoreV1Api(api)
        try:
            secret = core.read_namespaced_secret(name, namespace)
            key = base64.b64decode((secret.data or {})["key"])
        except ApiException as error:
            if error.status != 404:
                raise
            key = secrets.token_hex(32).encode()
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                string_data={"key": key.decode()},
            )
            core.create_namespaced_secret(namespace, body)
            logger.info("created the token key Secret %s/%s", namespace, name)
    if len(key) < 16:
        raise SystemExit("the token key must be at least 16 bytes")
    return key


def run(args: argparse.Namespace) -> int:
    level = logging.DEBUG if args.verbose else logging.INFO
    observability.configure_logging(level, args.log_format)
    for noisy in ("kopf.objects", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    api = load_client_config(args.kubeconfig)
    observer = observability.Observer()  # the process's metrics, handed to every part
    config = OperatorConfig(
        endpoint_url=args.endpoint_url,
        token_key=_token_key(api, args),
        default_checkpoint_uri=args.default_checkpoint_uri,
        capacity=(manager := capacity.build(args, api, observer)),
    )
    registry = handlers.Registry(Kube(api), config, observer)
    capacity.attach(manager, registry)
    observer.watch_registry(registry)  # /metrics reads the engines at scrape
    kopf.run(
        # The operator's state, for its handlers (no module globals).
        memo=kopf.Memo(registry=registry, listen=_parse_listen(args.listen), capacity=manager),
        standalone=True,
        clusterwide=bool(args.namespace_all or not args.namespace),
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        memories=event_only_memories(),  # nothing kept per object (operator/kopfmemories.py)
    )
    return 0
