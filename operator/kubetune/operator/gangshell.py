"""Deleting the pods of an attempt, every rank of a gang (operator/gang.py): at once
after a failure or an interruption, after the grace period once rank 0 has exited 0,
and in the background, retried, for a stop (`stop_ranks`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from kubernetes.client.rest import ApiException

from kubetune.operator.experiment import Experiment
from kubetune.operator.gang import rank_pod_name
from kubetune.operator.outcomes import api_message


def delete_ranks(
    exp: Experiment,
    trial: str,
    attempt: int,
    ranks: Iterable[int] | None = None,
    settle: bool = True,
) -> Coroutine[Any, Any, None]:
    """Delete the attempt's pods (`ranks`, or all), each with the pod grace period, once
    its launch, if one is under way, has stopped creating them. The launch is withdrawn
    when this is called, not when the deletion starts: a launch that resumes in between
    creates nothing more. (`settle=False`: the launch itself, not waiting for itself.)"""
    settled = exp.withdraw_launch(trial, attempt) if settle else None
    return _delete_ranks(exp, trial, attempt, ranks, settled)


async def _delete_ranks(
    exp: Experiment,
    trial: str,
    attempt: int,
    ranks: Iterable[int] | None,
    settled: asyncio.Event | None,
) -> None:
    if settled is not None:
        await settled.wait()
    workers = exp.spec.workers
    chosen = range(workers) if ranks is None else ranks
    await asyncio.gather(
        *(
            exp.kube.delete_pod(
                exp.namespace,
                rank_pod_name(trial, attempt, rank, workers),
                exp.config.pod_grace_seconds,
            )
            for rank in chosen
        )
    )


log = logging.getLogger(__name__)
STOP_RETRY_SECONDS = (1, 2, 5, 10, 30, 60)


def brief(error: Exception) -> str:
    """One line for the log: an API error's status and message, not its headers."""
    if isinstance(error, ApiException):
        return f"HTTP {error.status}: {api_message(error.body, str(error.reason), 300)}"
    return f"{type(error).__name__}: {error}"


def stop_ranks(exp: Experiment, trial: str, attempt: int) -> None:
    """A stop's deletions, in the background: the stop is in the history already, and
    a deletion the API server is slow to answer (a hanging webhook, Katib #2725) must
    not hold up the rest of the experiment's decisions (its end, say). Retried with
    back-off until done, or the experiment is gone."""
    settled = exp.withdraw_launch(trial, attempt)  # now, not when the deletion starts

    async def delete() -> None:
        if settled is not None:
            await settled.wait()
        for pause in (*STOP_RETRY_SECONDS, None):
            if exp.closed:
                return
            try:
                await delete_ranks(exp, trial, attempt, settle=False)  # settled above
                return
            except Exception as failure:  # the API's refusal or time-out: tried again
                error = brief(failure)
                if pause is None:
                    log.warning("%s: stopping %s failed, giving up: %s", exp.name, trial, error)
                    return
                log.warning(
                    "%s: stopping %s failed (%s); again in %d s", exp.name, trial, error, pause
                )
                await asyncio.sleep(pause)

    exp.in_background(delete())


def delete_ranks_later(exp: Experiment, trial: str, attempt: int, ranks: Iterable[int]) -> None:
    """Rank 0 exited 0: the others finish on their own (they save their shard), and
    whatever still runs after the grace period is deleted (in the background)."""
    chosen = tuple(ranks)
    settled = exp.withdraw_launch(trial, attempt)

    async def later() -> None:
        if settled is not None:
            await settled.wait()
        await asyncio.sleep(exp.config.pod_grace_seconds)
        if exp.closed:
            return
        # Those that ended stay, with their logs, as a single trial's pod does.
        names = {rank_pod_name(trial, attempt, r, exp.spec.workers): r for r in chosen}

        def still_running(pod: dict[str, Any]) -> bool:
            phase = (pod.get("status") or {}).get("phase")
            return pod["metadata"]["name"] in names and phase not in ("Succeeded", "Failed")

        listed = await exp.kube.list_pods(exp.namespace, exp.name, still_running)
        running = [names[p["metadata"]["name"]] for p in listed]
        await delete_ranks(exp, trial, attempt, running, settle=False)  # settled above

    exp.in_background(later())
