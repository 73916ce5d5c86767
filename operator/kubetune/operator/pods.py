"""Pure builders of the objects behind one trial attempt: its Pod and its token block's Secret."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kubetune.names import (
    GROUP,
    LABEL_ATTEMPT,
    LABEL_EXPERIMENT,
    LABEL_TRIAL,
    VERSION,
    pod_name,
    token_block,
    token_block_secret_name,
)
from kubetune.placement import Placement, apply_placement
from kubetune.space import render
from kubetune.spec import ExperimentSpec
from kubetune.trialenv import AttemptContext, rendered_command, trial_env


def owner_reference(
    kind: str, name: str, uid: str, api_version: str = f"{GROUP}/{VERSION}"
) -> dict:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(existing: Mapping[str, Any], uids: set[str]) -> bool:
    """Whether an object found under a name the operator makes has an owner reference to
    one of `uids`: someone else's object (a Secret `<trial>-token` made before the
    trial, say) is never adopted, and never deleted either."""
    references = (existing.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, dict) and r.get("uid") in uids for r in references)


def token_secret(
    namespace: str,
    experiment: str,
    block: int,
    tokens: Mapping[str, str],
    trial: str,
    trial_uid: str,
    experiment_uid: str,
) -> dict:
    """The Secret of one token block (`names.token_block_secret_name`): each trial's
    token under the trial's name. Controlled by the HPOTrial of the trial whose launch
    made it (what the operator may create: manifests/admission.yaml) and owned by the
    experiment too, so that it lives as long as the experiment: the garbage collector
    removes an object only when all its owners are gone, and that HPOTrial may be
    deleted by hand (and put back under a new UID) while the block's other trials run."""
    also = owner_reference("HPOExperiment", experiment, experiment_uid)
    owners = [
        owner_reference("HPOTrial", trial, trial_uid),
        {**also, "controller": False, "blockOwnerDeletion": False},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_block_secret_name(experiment, block),
            "namespace": namespace,
            "labels": {LABEL_EXPERIMENT: experiment},
            "ownerReferences": owners,
        },
        "type": "Opaque",
        "stringData": dict(tokens),
    }


def trial_pod(
    spec: ExperimentSpec,
    namespace: str,
    context: AttemptContext,
    trial_uid: str,
    extra_labels: Mapping[str, str] | None = None,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """The Pod of one attempt: the experiment's template, parameters substituted and injected.

    The token does not appear in the Pod: it comes from the trial's key of its token
    block's Secret, so that reading Pods (which many roles may) does not reveal it.
    """
    template = spec.trialTemplate.model_dump(mode="json", exclude_none=True)
    metadata = copy.deepcopy(template.get("metadata", {}))
    pod_spec = template["spec"]
    labels = {
        **metadata.get("labels", {}),
        **(extra_labels or {}),
        LABEL_EXPERIMENT: context.experiment,
        LABEL_TRIAL: context.trial,
        LABEL_ATTEMPT: str(context.attempt),
    }
    annotations = {
        **metadata.get("annotations", {}),
        # Consolidation must not evict a running trial; kubetune pauses trials itself.
        "karpenter.sh/do-not-disrupt": "true",
    }
    container = pod_spec["containers"][0]
    typed = spec.trialTemplate.spec.containers[0]
    params = context.params
    argv = rendered_command(typed, params)
    container["command"] = argv[: len(typed.command)]
    container["args"] = argv[len(typed.command) :]
    if not container["args"]:
        container.pop("args")
    env = [
        {**entry, "value": render(entry["value"], params)} if "value" in entry else entry
        for entry in container.get("env", [])
    ]
    ours = trial_env(spec, context)
    ours.pop("KUBETUNE_TOKEN")
    env = [e for e in env if e["name"] not in ours and e["name"] != "KUBETUNE_TOKEN"]
    env += [{"name": k, "value": v} for k, v in sorted(ours.items())]
    env.append(
        {
            "name": "KUBETUNE_TOKEN",
            "valueFrom": {
                "secretKeyRef": {
                    "name": token_block_secret_name(context.experiment, token_block(context.trial)),
                    "key": context.trial,
                }
            },
        }
    )
    container["env"] = env
    for other in pod_spec["containers"]:
        _quantities_as_strings(other.get("resources") or {})
    pod_spec["restartPolicy"] = "Never"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **{k: v for k, v in metadata.items() if k not in ("labels", "annotations", "name")},
            "name": pod_name(context.trial, context.attempt),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference("HPOTrial", context.trial, trial_uid)],
        },
        "spec": pod_spec,
    }
    # spec.capacity.nodePool: the pool's node selector, tolerations and label.
    return apply_placement(pod, placement) if placement is not None else pod


def _quantities_as_strings(resources: dict[str, Any]) -> None:
    # YAML gives `nvidia.com/gpu: 1` as a number; the API server stores quantities as
    # strings, and the Python client refuses anything else.
    for section in ("limits", "requests"):
        for name, value in (resources.get(section) or {}).items():
            resources[section][name] = str(value)
