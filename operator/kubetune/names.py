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
# An HPOTrial's first history records (signed JSON), written with its creation: its
# launch needs no status write of its own (operator/writes.py). Read only while the
# status holds no history.
ANNOTATION_FIRST_RECORDS = f"{GROUP}/first-records"
# Up to this size (a plan and a launch are about 1 KB; an object's annotations may hold
# 256 KiB in all); a bigger history goes in the first status write.
MAX_FIRST_RECORDS_BYTES = 32 * 1024


def pod_name(trial: str, attempt: int) -> str:
    return f"{trial}-a{attempt}"


def token_secret_name(trial: str) -> str:
    """A trial's own token Secret, as operators before token blocks made it (its pods
    may still run after an upgrade, so templates may not reference it either)."""
    return f"{trial}-token"


# Trials whose tokens one Secret holds: one Secret creation for this many trials instead
# of one per attempt (bench/scale.py: a sixth of the API writes), and at about 90 bytes
# a token far below the size objects are kept under (256 KiB).
TOKENS_PER_SECRET = 256


def token_block(trial: str) -> int:
    """The token block of trial `<experiment>-<number>`."""
    return int(trial.rsplit("-", 1)[1]) // TOKENS_PER_SECRET


def token_block_secret_name(experiment: str, block: int) -> str:
    """The Secret holding the tokens of trials TOKENS_PER_SECRET * block onwards, each
    under the trial's name; a pod reads only its own trial's key."""
    return f"{experiment}-kubetune-tokens-{block}"


def endpoint_for(base_url: str, namespace: str, experiment: str) -> str:
    """The KUBETUNE_ENDPOINT of an experiment's trials (see kubetune.ingest)."""
    return f"{base_url.rstrip('/')}/ns/{namespace}/exp/{experiment}"
