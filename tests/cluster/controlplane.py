"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler as local processes.

Usable from pytest (see :mod:`tests.cluster.fixtures`) and from plain scripts::

    from tests.cluster.controlplane import ControlPlane

    with ControlPlane() as cp:              # starts, waits for /readyz, stops on exit
        cp.kubectl("get", "ns")
        api = cp.api_client()               # kubernetes.client.ApiClient as admin
        sa_kubeconfig = cp.service_account_kubeconfig("default", "my-sa")

Binaries come from ``tests/cluster/build.sh`` (versions pinned in ``versions.env``);
:meth:`Binaries.locate` finds them in the cache that script fills.

What is real here: authentication by client certificates (the admin is in
``system:masters``), authorization ``Node,RBAC`` (RBAC is enforced for everyone
else), the default admission plugins (PodSecurity and ValidatingAdmissionPolicy
among them), service-account tokens signed by our own key
(TokenRequest works), garbage collection, namespace deletion and every other
controller of kube-controller-manager, and the scheduler (pods that fit no node stay
Pending/Unschedulable). What is absent: a kubelet and a container runtime (see
:mod:`tests.cluster.process_node` and :mod:`tests.cluster.kwok`), kube-proxy and any
network: Services get cluster IPs, but nothing routes to them.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubetune.names import GROUP, TRIALS
from kubetune.ports import free_port

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build.sh"

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# The first address of the service range is the `kubernetes` Service's cluster IP;
# the serving certificate must name it for in-cluster clients.
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "kubetune-admin"
# What the API server's audit log records: the reads of pods and HPOTrials by the
# service accounts of kubetune-system (the operator's), with their URLs, so that a test
# can see which selectors the operator's watches send. Nothing else: the log stays
# small and costs the scale bench nothing.
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:kubetune-system"]
    verbs: ["list", "watch"]
    resources:
      - group: ""
        resources: ["pods"]
      - group: "{GROUP}"
        resources: ["{TRIALS}"]
  - level: None
"""


class ControlPlaneError(RuntimeError):
    """The control plane (or one of its components) failed to start or answer."""


class MissingBinariesError(ControlPlaneError):
    """Some binaries are not built; run tests/cluster/build.sh."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The pinned versions, e.g. ``{"K8S_VERSION": "v1.37.2", ...}``."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path

    @classmethod
    def locate(cls, cache: Path | None = None) -> Binaries:
        """Paths of the binaries built by build.sh for the pinned versions.

        ``kubectl`` is the one build.sh built when there is one, else the one on PATH
        (build.sh only skips building it when PATH's is within the supported skew).
        """
        root = cache or cache_dir()
        v = read_versions()
        k8s = root / f"k8s-{v['K8S_VERSION']}" / "bin"
        own_kubectl = k8s / "kubectl"
        kubectl = own_kubectl
        if not own_kubectl.exists() and (system := shutil.which("kubectl")):
            kubectl = Path(system)
        return cls(
            etcd=root / f"etcd-{v['ETCD_VERSION']}" / "bin" / "etcd",
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=kubectl,
            kwok=root / f"kwok-{v['KWOK_VERSION']}" / "bin" / "kwok",
        )

    def missing(self) -> list[str]:
        return [
            f"{name} ({path})"
            for name, path in vars(self).items()
            if not (Path(path).is_file() and os.access(path, os.X_OK))
        ]

    def require(self) -> Binaries:
        if missing := self.missing():
            raise MissingBinariesError(
                f"missing binaries: {', '.join(missing)}; build them with {BUILD_SCRIPT}"
            )
        return self


# --- PKI ----------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are generated in microseconds where RSA takes tens of ms each;
    # Kubernetes accepts ECDSA everywhere (certificates and service-account tokens).
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class CertAuthority:
    """A throw-away CA that signs every certificate of one control plane."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "kubetune-test-ca") -> CertAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, both PEM."""
        key = _new_key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_dict(
    server: str,
    ca_pem: bytes,
    user: str,
    *,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A self-contained kubeconfig (credentials inline, so the file can be copied)."""
    creds: dict[str, str] = {}
    if client_cert_pem and client_key_pem:
        creds["client-certificate-data"] = _b64(client_cert_pem)
        creds["client-key-data"] = _b64(client_key_pem)
    if token:
        creds["token"] = token
    context: dict[str, str] = {"cluster": "kubetune-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubetune-test",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    # JSON is YAML, and both kubectl and the Python client read it.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    return path


# --- processes ---------------------------------------------------------------------


def pdeathsig_prefix(any_thread: bool = False) -> list[str]:
    """A command prefix that makes the child die with us if the test process is killed
    (SIGKILL skips every teardown). The kernel sends the signal when the *thread* that
    forked exits, so by default it is used only from the main thread, which outlives
    what it starts; ``any_thread`` is for threads that live until their child exits."""
    setpriv = shutil.which("setpriv")
    if setpriv and (any_thread or threading.current_thread() is threading.main_thread()):
        return [setpriv, "--pdeathsig", "SIGKILL", "--"]
    return []


@dataclass
class Component:
    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"### {' '.join(self.args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*pdeathsig_prefix(), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own process group: a Ctrl-C in the terminal reaches the test
                # runner only, which then stops components in the right order.
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        return tail_file(self.log_path, lines)


def tail_file(path: Path, lines: int = 40, max_bytes: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    on_poll: Callable[[], None] | None = None,
) -> Any:
    """Polls ``predicate`` until it returns something truthy; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        if on_poll:
            on_poll()
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the condition may error until it holds
            last_exc = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{suffix}")
        time.sleep(interval)


# --- the control plane -------------------------------------------------------------

WORKDIR_PREFIX = "kubetune-cp-"


def _remove_orphaned_workdirs() -> None:
    """Removes the temp dirs of control planes whose test process was killed (SIGKILL
    skips teardown; the components died with it, their data did not). Only dirs whose
    recorded owner no longer exists go: a live cluster is never touched."""
    for d in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours to judge
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on loopback.

    Everything (data, certificates, kubeconfigs, logs) lives in ``workdir``, a fresh
    temporary directory unless given; it is removed by :meth:`stop` unless
    ``keep_workdir`` (or ``KUBETUNE_KEEP_CLUSTER_DIR=1``) is set.
    """

    binaries: Binaries | None = None
    workdir: Path | None = None
    keep_workdir: bool = False
    controller_manager: bool = True
    scheduler: bool = True
    verbosity: int = 1
    extra_apiserver_args: Sequence[str] = ()
    extra_controller_manager_args: Sequence[str] = ()

    server: str = field(init=False, default="")
    etcd_url: str = field(init=False, default="")
    kubeconfig: Path = field(init=False, default=Path())
    ca: CertAuthority | None = field(init=False, default=None)
    ca_file: Path = field(init=False, default=Path())
    components: dict[str, Component] = field(init=False, default_factory=dict)
    startup_seconds: float = field(init=False, default=0.0)
    # Seconds from launch to ready, per component, of the last start().
    timings: dict[str, float] = field(init=False, default_factory=dict)
    _admin_cert: tuple[bytes, bytes] = field(init=False, default=(b"", b""))
    _made_workdir: bool = field(init=False, default=False)

    # -- lifecycle --

    def start(self, timeout: float = 120.0) -> ControlPlane:
        """Starts every component and returns once the cluster is usable: /readyz is ok,
        the controller manager and scheduler are healthy, and the `default`
        ServiceAccount exists (so pods can be created in `default`)."""
        t0 = time.monotonic()
        self.binaries = (self.binaries or Binaries.locate()).require()
        if self.workdir is None:
            _remove_orphaned_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            (self.workdir / "owner.pid").write_text(str(os.getpid()))
            self._made_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        try:
            self._write_pki()
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            if self.controller_manager:
                self._start_controller_manager(deadline)
            if self.scheduler:
                self._start_scheduler(deadline)
            if self.controller_manager:
                t_sa = time.monotonic()
                self._wait(
                    lambda: self._get_json("/api/v1/namespaces/default/serviceaccounts/default"),
                    deadline,
                    "the default ServiceAccount in namespace default",
                )
                self.timings["default-serviceaccount"] = time.monotonic() - t_sa
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stops exactly the processes this object started, newest first."""
        for comp in reversed(list(self.components.values())):
            comp.stop()
        keep = self.keep_workdir or os.environ.get("KUBETUNE_KEEP_CLUSTER_DIR") == "1"
        if self._made_workdir and self.workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._made_workdir = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients --

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` (admin unless another kubeconfig is given)."""
        from kubernetes import config

        client = config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))
        # Watch threads of the node agents and the tests share one client at times.
        client.configuration.connection_pool_maxsize = 32
        client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        return client

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; raises CalledProcessError (with stderr in
        its message) when ``check`` and it fails."""
        assert self.binaries is not None
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}
        proc = subprocess.run(
            [str(self.binaries.kubectl), *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            ) from RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def service_account_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for an existing ServiceAccount, from the TokenRequest API."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        result = self._request_json(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body,
        )
        return str(result["status"]["token"])

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path | None = None,
        *,
        create: bool = False,
        expiration_seconds: int = 3600,
    ) -> Path:
        """A kubeconfig that authenticates as ``system:serviceaccount:NS:NAME`` (with
        only the RBAC rights bound to it). ``create`` makes the ServiceAccount first."""
        if create:
            body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
            try:
                self._request_json("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body)
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    raise
        token = self.service_account_token(namespace, name, expiration_seconds)
        assert self.workdir is not None and self.ca is not None
        path = path or self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(
            path,
            kubeconfig_dict(
                self.server,
                self.ca.cert_pem,
                f"system:serviceaccount:{namespace}:{name}",
                token=token,
                namespace=namespace,
            ),
        )

    def user_kubeconfig(
        self, user: str, groups: Sequence[str] = (), path: Path | None = None
    ) -> Path:
        """A kubeconfig with a client certificate for any user name and groups."""
        assert self.workdir is not None and self.ca is not None
        cert, key = self.ca.issue(user, organizations=groups, client=True)
        path = path or self.workdir / "kubeconfigs" / f"user-{user.replace(':', '_')}.kubeconfig"
        return write_kubeconfig(
            path,
            kubeconfig_dict(
                self.server, self.ca.cert_pem, user, client_cert_pem=cert, client_key_pem=key
            ),
        )

    def issue_serving_cert(
        self, name: str, ip_addresses: Iterable[str] = ("127.0.0.1",)
    ) -> tuple[Path, Path]:
        """A serving certificate signed by the cluster CA, written to files (cert, key)."""
        assert self.workdir is not None and self.ca is not None
        cert, key = self.ca.issue(
            name, dns_names=[name, "localhost"], ip_addresses=list(ip_addresses), server=True
        )
        pki = self.workdir / "pki"
        cert_path, key_path = pki / f"{name}-serving.crt", pki / f"{name}-serving.key"
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        return cert_path, key_path

    # -- diagnostics --

    def log_tails(self, lines: int = 40) -> dict[str, str]:
        """The last lines of each component's log, by component name."""
        return {name: comp.log_tail(lines) for name, comp in self.components.items()}

    def format_log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"----- {name} ({self.components[name].log_path}) -----\n{text}"
            for name, text in self.log_tails(lines).items()
        )

    @property
    def logs_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "logs"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: what AUDIT_POLICY records, one JSON event a line."""
        return self.logs_dir / "audit.log"

    def audited(self, user: str) -> list[dict[str, Any]]:
        """The audit events (stage ResponseStarted or ResponseComplete) of `user`'s
        requests so far."""
        if not self.audit_log.exists():
            return []
        events = (json.loads(line) for line in self.audit_log.read_text().splitlines() if line)
        return [e for e in events if e.get("user", {}).get("username") == user]

    def running(self) -> bool:
        return bool(self.components) and all(c.running() for c in self.components.values())

    # -- internals --

    def _write_pki(self) -> None:
        assert self.workdir is not None
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca = ca = CertAuthority.create()

        def write(name: str, data: bytes, secret: bool = False) -> Path:
            path = pki / name
            path.write_bytes(data)
            if secret:
                path.chmod(0o600)
            return path

        self.ca_file = write("ca.crt", ca.cert_pem)
        write("ca.key", ca.key_pem, secret=True)
        cert, key = ca.issue(
            "kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=["127.0.0.1", KUBERNETES_SERVICE_IP],
            server=True,
        )
        write("apiserver.crt", cert)
        write("apiserver.key", key, secret=True)
        # The apiserver's identity towards kubelets (here: the process node's log server).
        cert, key = ca.issue(
            "kube-apiserver-kubelet-client", organizations=["kubeadm:cluster-admins"], client=True
        )
        write("apiserver-kubelet-client.crt", cert)
        write("apiserver-kubelet-client.key", key, secret=True)
        sa_key = _new_key()
        write("sa.key", _pem_key(sa_key), secret=True)
        write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        # The request-header (front proxy) CA: without it every component logs, every few
        # seconds, that extension-apiserver-authentication lacks it, burying real errors.
        front = CertAuthority.create("kubetune-front-proxy-ca")
        write("front-proxy-ca.crt", front.cert_pem)
        cert, key = front.issue("front-proxy-client", client=True)
        write("front-proxy-client.crt", cert)
        write("front-proxy-client.key", key, secret=True)
        self._admin_cert = ca.issue(ADMIN_USER, organizations=["system:masters"], client=True)
        write("admin.crt", self._admin_cert[0])
        write("admin.key", self._admin_cert[1], secret=True)

    def _component_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        assert self.workdir is not None and self.ca is not None
        cert, key = self.ca.issue(user, organizations=groups, client=True)
        return write_kubeconfig(
            self.workdir / "kubeconfigs" / f"{user.replace(':', '_')}.kubeconfig",
            kubeconfig_dict(
                self.server, self.ca.cert_pem, user, client_cert_pem=cert, client_key_pem=key
            ),
        )

    def _launch(
        self,
        name: str,
        make_args: Callable[[], list[str]],
        ready: Callable[[], bool],
        deadline: float,
        attempts: int = 3,
    ) -> Component:
        """Starts a component and waits until ``ready``. A component that dies because
        its port was taken between picking and binding is retried on new ports."""
        assert self.workdir is not None
        for attempt in range(1, attempts + 1):
            comp = Component(name, make_args(), self.workdir / "logs" / f"{name}.log")
            self.components[name] = comp
            t0 = time.monotonic()
            comp.start()
            try:
                self._wait(ready, deadline, f"{name} to become ready", component=comp)
                self.timings[name] = time.monotonic() - t0
                return comp
            except ControlPlaneError:
                if attempt < attempts and "address already in use" in comp.log_tail(80):
                    comp.stop()
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait(
        self,
        predicate: Callable[[], Any],
        deadline: float,
        what: str,
        component: Component | None = None,
    ) -> Any:
        def check_alive() -> None:
            for comp in [component] if component else self.components.values():
                if comp is not None and comp.process and comp.process.poll() is not None:
                    raise ControlPlaneError(
                        f"{comp.name} exited with code {comp.process.returncode} while "
                        f"waiting for {what}; last log lines:\n{comp.log_tail(60)}"
                    )

        try:
            return wait_until(
                predicate, max(0.0, deadline - time.monotonic()), what, on_poll=check_alive
            )
        except TimeoutError as exc:
            raise ControlPlaneError(f"{exc}\n{self.format_log_tails(30)}") from None

    def _start_etcd(self, deadline: float) -> None:
        assert self.workdir is not None and self.binaries is not None
        workdir, binaries = self.workdir, self.binaries
        ports: dict[str, int] = {}

        def args() -> list[str]:
            ports["client"], ports["peer"] = free_port(), free_port()
            data = workdir / "etcd"
            shutil.rmtree(data, ignore_errors=True)
            peer = f"http://127.0.0.1:{ports['peer']}"
            client = f"http://127.0.0.1:{ports['client']}"
            return [
                str(binaries.etcd),
                "--name=kubetune",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kubetune={peer}",
                # A test cluster need not survive a power cut; fsync dominates its latency.
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ]

        def ready() -> bool:
            url = f"http://127.0.0.1:{ports['client']}/health"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")

        self._launch("etcd", args, ready, deadline)
        self.etcd_url = f"http://127.0.0.1:{ports['client']}"

    def _start_apiserver(self, deadline: float) -> None:
        assert self.workdir is not None and self.binaries is not None and self.ca is not None
        workdir, binaries, ca = self.workdir, self.binaries, self.ca
        pki = workdir / "pki"
        audit_policy = workdir / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        self.logs_dir.mkdir(parents=True, exist_ok=True)

        def args() -> list[str]:
            port = free_port()
            self.server = f"https://127.0.0.1:{port}"
            return [
                str(binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                # On by default; named because kubetune's admission policies and the
                # security tests rely on them (manifests/admission.yaml).
                "--enable-admission-plugins=PodSecurity,ValidatingAdmissionPolicy",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # Node agents serve logs with certificates of our CA, as kubelets do.
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                # The `kubernetes` Endpoints would point at 127.0.0.1, which validation
                # refuses for endpoints; nothing here could route to it anyway.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=100",
                "--audit-log-maxbackup=1",
                f"--v={self.verbosity}",
                *self.extra_apiserver_args,
            ]

        def ready() -> bool:
            return self._get_text("/readyz") == "ok"

        # The admin kubeconfig must exist before readiness is probed through it.
        def args_and_kubeconfig() -> list[str]:
            a = args()
            self.kubeconfig = write_kubeconfig(
                workdir / "admin.kubeconfig",
                kubeconfig_dict(
                    self.server,
                    ca.cert_pem,
                    ADMIN_USER,
                    client_cert_pem=self._admin_cert[0],
                    client_key_pem=self._admin_cert[1],
                ),
            )
            return a

        self._launch("kube-apiserver", args_and_kubeconfig, ready, deadline)

    def _secure_component(
        self,
        name: str,
        binary: Path,
        user: str,
        extra: Callable[[Path], list[str]],
        deadline: float,
    ) -> None:
        assert self.workdir is not None
        workdir = self.workdir
        kubeconfig = self._component_kubeconfig(user)
        port_box: dict[str, int] = {}

        def args() -> list[str]:
            port_box["port"] = port = free_port()
            return [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={workdir / (name + '-certs')}",
                "--leader-elect=false",
                f"--v={self.verbosity}",
                *extra(kubeconfig),
            ]

        def ready() -> bool:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert, made at start-up
            url = f"https://127.0.0.1:{port_box['port']}/healthz"
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                return bool(resp.read().decode() == "ok")

        self._launch(name, args, ready, deadline)

    def _start_controller_manager(self, deadline: float) -> None:
        assert self.workdir is not None and self.binaries is not None
        pki = self.workdir / "pki"
        self._secure_component(
            "kube-controller-manager",
            self.binaries.kube_controller_manager,
            "system:kube-controller-manager",
            lambda _kc: [
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*",
                *self.extra_controller_manager_args,
            ],
            deadline,
        )

    def _start_scheduler(self, deadline: float) -> None:
        assert self.binaries is not None
        self._secure_component(
            "kube-scheduler",
            self.binaries.kube_scheduler,
            "system:kube-scheduler",
            lambda _kc: [],
            deadline,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.workdir is not None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self.workdir / "pki"
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as resp:
            return bytes(resp.read())

    def _request_json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self._request(method, path, body))

    def _get_json(self, path: str) -> Any:
        return self._request_json("GET", path)

    def _get_text(self, path: str) -> str:
        return self._request("GET", path).decode()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.cluster.controlplane [--check]``: start a cluster, print how to
    reach it, and keep it up until Ctrl-C (or, with ``--check``, stop it at once)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="start, report, stop")
    args = parser.parse_args(argv)
    cp = ControlPlane()
    cp.start()
    try:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in cp.timings.items())
        print(f"control plane up in {cp.startup_seconds:.1f}s ({steps}) at {cp.server}")
        print(f"export KUBECONFIG={cp.kubeconfig}")
        print(f"logs: {cp.logs_dir}")
        if not args.check:
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
