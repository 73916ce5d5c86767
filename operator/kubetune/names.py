"""Names and labels of the objects kubetune creates in Kubernetes.

A neutral module: the operator (which creates the objects) and the capacity loop (which
reads their labels to place and count trial pods) both import it, and neither imports
the other."""

from __future__ import annotations

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
EXPERIMENTS = "hpoexperiments"
TRIALS = "hpotrials"

LABEL_EXPERIMENT = f"{GROUP}/experiment"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_ATTEMPT = f"{GROUP}/attempt"
# The node pool a trial pod was placed on (capacity/pools.py adds it with the placement).
LABEL_POOL = f"{GROUP}/node-pool"
TOKEN_KEY = "token"


def pod_name(trial: str, attempt: int) -> str:
    return f"{trial}-a{attempt}"


def token_secret_name(trial: str) -> str:
    return f"{trial}-token"


def endpoint_for(base_url: str, namespace: str, experiment: str) -> str:
    """The KUBETUNE_ENDPOINT of an experiment's trials (see kubetune.ingest)."""
    return f"{base_url.rstrip('/')}/ns/{namespace}/exp/{experiment}"
