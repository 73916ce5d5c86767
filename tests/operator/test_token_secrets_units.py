"""TokenSecrets (operator/tokensecrets.py) against a fake API: one creation per block
whatever the launches, errors left to the launches and never lost, and the Secret made
again, with back-off until it is, only for a real trial's pod that waits for it."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from kubetune.engine import UnknownTrial
from kubetune.operator import tokensecrets
from kubetune.operator.tokensecrets import TokenSecrets
from kubetune.tokens import TokenAuthority


class FakeKube:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.failures: list[ApiException] = []

    async def create(self, body: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        if self.failures:
            raise self.failures.pop(0)
        self.created.append(body["metadata"]["name"])


class FakeEngine:
    def __init__(self, trials: int) -> None:
        self.trials = trials

    def trial_name(self, number: int) -> str:
        return f"exp-{number}"

    def trial_by_name(self, name: str) -> Any:
        number = name.removeprefix("exp-")
        if not name.startswith("exp-") or not number.isdigit() or int(number) >= self.trials:
            raise UnknownTrial(name)
        return type("Trial", (), {"number": int(number)})


class FakeExperiment:
    name, namespace, uid = "exp", "ns", "uid-exp"

    def __init__(self, trials: int = 600) -> None:
        self.kube = FakeKube()
        self.tokens = TokenAuthority(b"k" * 32, "ns/exp/uid-exp")
        self.engine = FakeEngine(trials)
        self.closed = False

    def close_with_namespace(self) -> None:
        self.closed = True


def waiting_pod(trial: str, uid: str, secret: str = "exp-kubetune-tokens-0") -> dict[str, Any]:
    waiting = {"reason": "CreateContainerConfigError", "message": f'secret "{secret}" not found'}
    return {
        "metadata": {
            "labels": {"kubetune.dev/trial": trial},
            "ownerReferences": [{"kind": "HPOTrial", "uid": uid}],
        },
        "status": {"containerStatuses": [{"state": {"waiting": waiting}}]},
    }


def error(status: int, reason: str = "", causes: list[dict[str, str]] | None = None) -> Any:
    failure = ApiException(status=status, reason=reason or "refused")
    failure.body = json.dumps({"details": {"causes": causes or []}})
    return failure


@pytest.fixture
def lost_errors() -> list[dict[str, Any]]:
    """What the event loop reports as never retrieved (asserted empty by the tests)."""
    return []


def run(lost: list[dict[str, Any]], work: Any) -> None:
    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: lost.append(context))
        await work()

    asyncio.run(main())


def test_launches_of_a_block_create_its_secret_once(lost_errors: list[dict[str, Any]]) -> None:
    exp = FakeExperiment()
    secrets = TokenSecrets(exp)  # type: ignore[arg-type]

    async def work() -> None:
        await asyncio.gather(*(secrets.ensure(f"exp-{n}", f"uid-{n}") for n in (0, 5, 255, 256)))
        await secrets.ensure("exp-7", "uid-7")  # resumed or later: nothing created

    run(lost_errors, work)
    assert exp.kube.created == ["exp-kubetune-tokens-0", "exp-kubetune-tokens-1"]
    assert not lost_errors


def test_a_failed_creation_is_the_launchs_error_and_the_next_launch_tries_again(
    lost_errors: list[dict[str, Any]],
) -> None:
    exp = FakeExperiment()
    secrets = TokenSecrets(exp)  # type: ignore[arg-type]

    async def work() -> None:
        exp.kube.failures = [error(500)]
        with pytest.raises(ApiException):
            await secrets.ensure("exp-1", "uid-1")
        await secrets.ensure("exp-2", "uid-2")
        # A launch given up while the creation fails: its error is not lost unheard.
        exp.kube.failures = [error(500)]
        secrets._made.clear()
        waiter = asyncio.create_task(secrets.ensure("exp-3", "uid-3"))
        await asyncio.sleep(0.001)
        waiter.cancel()
        await asyncio.sleep(0.05)
        secrets._made.clear()  # no launch of the block comes again: the task is collected
        gc.collect()
        await secrets.ensure("exp-4", "uid-4")

    run(lost_errors, work)
    assert exp.kube.created == ["exp-kubetune-tokens-0", "exp-kubetune-tokens-0"]
    assert not lost_errors


def test_only_a_real_trials_pod_waiting_for_its_secret_has_it_made_again(
    lost_errors: list[dict[str, Any]],
) -> None:
    exp = FakeExperiment(trials=10)
    secrets = TokenSecrets(exp)  # type: ignore[arg-type]
    uids = {3: "uid-3"}

    async def work() -> None:
        forged = [
            waiting_pod("exp-3", "someone-elses-uid"),  # not under the operator's HPOTrial
            waiting_pod("exp-99999", "uid-3", "exp-kubetune-tokens-390"),  # no such trial
            waiting_pod("exp-5-7", "uid-3"),  # experiment exp-5's trial 7
            waiting_pod("exp-4", "uid-4"),  # a trial with no HPOTrial of the operator's
            waiting_pod("exp-3", "uid-3", "db-password"),  # waits for another Secret
        ]
        for pod in forged:
            secrets.pod_changed(pod, uids)
        await asyncio.sleep(0.05)
        assert exp.kube.created == []
        secrets.pod_changed(waiting_pod("exp-3", "uid-3"), uids)
        secrets.pod_changed(waiting_pod("exp-3", "uid-3"), uids)  # while it is being made
        await asyncio.sleep(0.05)
        secrets.pod_changed(waiting_pod("exp-3", "uid-3"), uids)  # made a moment ago
        await asyncio.sleep(0.05)

    run(lost_errors, work)
    assert exp.kube.created == ["exp-kubetune-tokens-0"]
    assert not lost_errors


def test_a_secret_made_again_is_retried_with_back_off_until_it_is(
    lost_errors: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod waiting for its Secret changes no more: no later event would ask again."""
    monkeypatch.setattr(tokensecrets, "RECREATE_SECONDS", 0.02)
    exp = FakeExperiment(trials=10)
    secrets = TokenSecrets(exp)  # type: ignore[arg-type]

    async def work() -> None:
        exp.kube.failures = [error(500), error(403, "Forbidden")]
        secrets.pod_changed(waiting_pod("exp-3", "uid-3"), {3: "uid-3"})
        await asyncio.sleep(0.3)

    run(lost_errors, work)
    assert exp.kube.created == ["exp-kubetune-tokens-0"]
    assert not lost_errors


def test_a_namespace_being_deleted_ends_the_retries(lost_errors: list[dict[str, Any]]) -> None:
    exp = FakeExperiment(trials=10)
    secrets = TokenSecrets(exp)  # type: ignore[arg-type]

    async def work() -> None:
        exp.kube.failures = [error(403, "Forbidden", [{"reason": "NamespaceTerminating"}])]
        secrets.pod_changed(waiting_pod("exp-3", "uid-3"), {3: "uid-3"})
        await asyncio.sleep(0.05)

    run(lost_errors, work)
    assert exp.closed and exp.kube.created == []
    assert not lost_errors
