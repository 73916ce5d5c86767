"""A namespace deleted under a running experiment (a careless admin's `kubectl delete
ns`): the API server refuses every create there (403, cause NamespaceTerminating), and
the experiment goes with the namespace. The operator stops creating and writing for it,
quietly. Before, deleting the namespace of bench/scale.py's 60-trial experiment logged
194 tracebacks: each HPOTrial deleted was put back (refused), every sampled trial's
HPOTrial was created (refused), and the sampling task died "never retrieved"."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.engine import SampleTrial
from kubetune.operator.experiment import Experiment, OperatorConfig
from kubetune.operator.history import HistoryRecords
from kubetune.operator.outcomes import namespace_terminating
from kubetune.operator.writes import StatusWriter
from tests.engine.helpers import fixed_params, make_spec


def refused(status: int, reason: str | None, message: str = "forbidden") -> ApiException:
    """An ApiException with a Status body as the API server sends it."""
    causes = [{"reason": reason, "message": "...", "field": "metadata.namespace"}]
    body = {"kind": "Status", "status": "Failure", "message": message, "code": status}
    if reason is not None:
        body["details"] = {"name": "t0", "kind": "hpotrials", "causes": causes}
    error = ApiException(status=status, reason="Forbidden")
    error.body = json.dumps(body)
    return error


def test_only_the_namespace_lifecycle_refusal_counts() -> None:
    def says(error: ApiException) -> bool:
        return namespace_terminating(error.status, error.body)

    assert says(refused(403, "NamespaceTerminating", "unable to create new content"))
    assert not says(refused(403, None, "exceeded quota: compute"))  # waits for quota
    assert not says(refused(403, "FieldValueForbidden"))  # Pod Security: the trial fails
    assert not says(refused(409, "NamespaceTerminating"))
    assert not namespace_terminating(403, b"not json")
    assert not namespace_terminating(403, '{"details": {"causes": "oops"}}')
    assert not namespace_terminating(403, None)


class TerminatingNamespace:
    """The API of a namespace being deleted: creates refused, writes counted."""

    def __init__(self) -> None:
        self.creates = 0
        self.patches = 0

    async def create_trial(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.creates += 1
        raise refused(403, "NamespaceTerminating", "unable to create new content")

    async def patch_trial_status(self, namespace: str, name: str, patch: Any) -> str:
        self.patches += 1
        return "1"

    async def post_event(self, *args: Any) -> None:
        return None


def test_a_trial_created_in_a_namespace_being_deleted_closes_the_experiment() -> None:
    api = TerminatingNamespace()
    body = {"metadata": {"namespace": "ns", "name": "exp", "uid": "u1"}}
    config = OperatorConfig(endpoint_url="http://127.0.0.1:1", token_key=b"k" * 32)
    experiment = Experiment(api, config, body, make_spec())  # type: ignore[arg-type]
    writer = StatusWriter(experiment, HistoryRecords(experiment))
    actions = experiment.engine.decide(0.0)
    assert any(isinstance(a, SampleTrial) for a in actions)
    experiment.engine.record_suggestion(0, fixed_params(experiment.engine, 0))
    experiment.engine.decide(0.0)  # trial 0 launched: its HPOTrial is to be created

    async def scenario() -> None:
        writer.note_new_events()
        await writer.flush_trial(0)  # raised ForbiddenException before
        await writer.flush_trial(0)

    asyncio.run(scenario())
    assert experiment.closed
    assert (api.creates, api.patches) == (1, 0)
