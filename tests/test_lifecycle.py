"""The job lifecycle as pure decisions: no database, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from queuectl_core.errors import ValidationError
from queuectl_core.jobs import lifecycle
from queuectl_core.jobs.lifecycle import Transition
from queuectl_core.jobs.models import EventKind, Job, JobState
from queuectl_core.jobs.records import AttemptResult

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OK = AttemptResult(exit_code=0)
BAD = AttemptResult(exit_code=1, error="exit status 1")


def job(state: JobState = JobState.PROCESSING, attempts: int = 1, max_retries: int = 3, **kw: object) -> Job:
    return replace(Job(id="j", command="true", state=state, attempts=attempts, max_retries=max_retries,
                       priority=0, created_at=T0, updated_at=T0, run_at=T0, lease_token="tok"), **kw)


def test_complete_keeps_the_token_and_clears_the_lease() -> None:
    c = lifecycle.complete(OK)
    assert (c.state, c.from_states, c.event, c.result) == (JobState.COMPLETED, (JobState.PROCESSING,),
                                                          EventKind.COMPLETED, OK)
    assert c.clear_lease and not c.clear_token and c.idempotent


@pytest.mark.parametrize("attempts, max_retries, delay, expected", [
    (1, 3, 2.0, JobState.FAILED),
    (3, 3, 8.0, JobState.FAILED),   # the third failure of four allowed runs: one retry left
    (4, 3, 16.0, JobState.DEAD),    # max_retries = 3: at most 4 runs
    (1, 0, 1.0, JobState.DEAD),
    (1, 3, None, JobState.DEAD),    # no delay could be decided: the DLQ
])
def test_fail_retries_until_max_retries_then_dead(attempts: int, max_retries: int, delay: float | None,
                                                   expected: JobState) -> None:
    c = lifecycle.fail(job(attempts=attempts, max_retries=max_retries), BAD, delay)
    assert c.state == expected and c.result == BAD and c.clear_lease and not c.clear_token
    if expected == JobState.FAILED:
        assert (c.transition, c.event, c.run_in) == (Transition.RETRY, EventKind.FAILED, delay)
    else:
        assert (c.transition, c.event, c.run_in) == (Transition.BURY, EventKind.DEAD, None)


def test_retry_delay_is_clamped_to_what_a_database_can_store() -> None:
    assert lifecycle.retry(BAD, float("inf")).run_in == lifecycle.MAX_DELAY_SECONDS
    assert lifecycle.retry(BAD, -5).run_in == 0.0


def test_fallback_delay_is_the_spec_formula() -> None:
    assert lifecycle.fallback_delay(3, 2) == 8.0
    assert lifecycle.fallback_delay(10_000, 2) == float("inf")


def test_heartbeat_renews_only() -> None:
    c = lifecycle.heartbeat(30)
    assert (c.state, c.lease_seconds, c.event, c.from_states) == (None, 30, None, (JobState.PROCESSING,))
    assert not c.idempotent


def test_release_hands_back_uncounted() -> None:
    c = lifecycle.release(job(attempts=2))
    assert (c.state, c.attempts, c.run_in, c.event) == (JobState.PENDING, 1, 0.0, EventKind.RELEASED)
    assert c.clear_token and c.clear_lease
    assert lifecycle.release(job(attempts=0)).attempts == 0


@pytest.mark.parametrize("attempts, max_retries, expected, event", [
    (1, 1, JobState.FAILED, EventKind.FAILED),
    (2, 1, JobState.DEAD, EventKind.DEAD),
])
def test_recover_counts_the_lost_attempt(attempts: int, max_retries: int, expected: JobState,
                                         event: EventKind) -> None:
    c = lifecycle.recover(job(attempts=attempts, max_retries=max_retries))
    assert (c.state, c.event, c.reason, c.run_in) == (expected, event, lifecycle.LEASE_EXPIRED_REASON, 0.0)
    assert c.expired_only and c.clear_token and c.from_states == (JobState.PROCESSING,)


def test_recover_of_a_job_whose_cancel_was_requested_cancels_it() -> None:
    assert lifecycle.recover(job(cancel_requested=True)).state == JobState.CANCELLED


def test_cancel_depends_on_the_state() -> None:
    for state in (JobState.PENDING, JobState.FAILED):
        c = lifecycle.cancel(job(state=state))
        assert (c.state, c.event, c.transition) == (JobState.CANCELLED, EventKind.CANCELLED, Transition.CANCEL)
        assert c.from_states == (JobState.PENDING, JobState.FAILED)
    asked = lifecycle.cancel(job(state=JobState.PROCESSING))
    assert (asked.state, asked.cancel_requested, asked.event) == (None, True, EventKind.CANCEL_REQUESTED)
    for state in lifecycle.FINISHED_STATES:
        with pytest.raises(ValidationError, match="already finished"):
            lifecycle.cancel(job(state=state))
    done = lifecycle.cancelled(BAD)
    assert (done.state, done.reason, done.from_states) == (JobState.CANCELLED, "cancelled", (JobState.PROCESSING,))


def test_replay_only_from_the_dlq() -> None:
    c = lifecycle.replay(job(state=JobState.DEAD, attempts=4), command="echo fixed")
    assert (c.state, c.attempts, c.run_in, c.command, c.event) == \
        (JobState.PENDING, 0, 0.0, "echo fixed", EventKind.RETRIED)
    assert c.from_states == (JobState.DEAD,) and c.clear_token
    with pytest.raises(ValidationError, match="not in the DLQ"):
        lifecycle.replay(job(state=JobState.COMPLETED))


def test_restart_only_finished_jobs() -> None:
    for state in lifecycle.FINISHED_STATES:
        c = lifecycle.restart(job(state=state, attempts=2))
        assert (c.state, c.attempts, c.event) == (JobState.PENDING, 0, EventKind.RESTARTED)
        assert c.from_states == lifecycle.FINISHED_STATES
    for state in (JobState.PENDING, JobState.PROCESSING, JobState.FAILED):
        with pytest.raises(ValidationError, match="not finished"):
            lifecycle.restart(job(state=state))


def test_every_transition_is_decided_here() -> None:
    made = {lifecycle.heartbeat(1).transition, lifecycle.complete(OK).transition,
            lifecycle.retry(BAD, 1).transition, lifecycle.bury(BAD).transition,
            lifecycle.release(job()).transition, lifecycle.recover(job()).transition,
            lifecycle.cancel(job(state=JobState.PENDING)).transition,
            lifecycle.cancel(job()).transition, lifecycle.replay(job(state=JobState.DEAD)).transition,
            lifecycle.restart(job(state=JobState.COMPLETED)).transition,
            *(c.transition for c in (lifecycle.dependants("p", s) for s in JobState) if c is not None)}
    assert made == set(Transition)


def test_the_sql_layer_writes_the_lifecycles_state_groups(tmp_path: Path) -> None:
    from queuectl_plugins.sqlite_storage import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "q.db")
    try:
        claim, _ = storage.claim_statement()
        assert "state IN ('pending', 'failed')" in storage._sql(claim)
        assert storage._sql("{runnable}|{holding}|{finished}") == "|".join(
            ", ".join(f"'{s}'" for s in group)
            for group in (lifecycle.RUNNABLE_STATES, lifecycle.HOLDING_STATES, lifecycle.FINISHED_STATES))
    finally:
        storage.close()


# -- scheduling ------------------------------------------------------------------------------
def test_exit_code_rules_decide_in_the_fail_transition() -> None:
    usage = AttemptResult(exit_code=2, error="exit 2")
    # no_retry_on: straight to the DLQ even with retries left, saying why
    c = lifecycle.fail(job(no_retry_on=(2, 64)), usage, 1.0)
    assert c.state == JobState.DEAD and c.reason == "exit 2; not retried: exit code 2 is in no_retry_on"
    assert lifecycle.fail(job(no_retry_on=(64,)), usage, 1.0).state == JobState.FAILED
    # retry_on: only those are retried
    assert lifecycle.fail(job(retry_on=(1, 75)), usage, 1.0).state == JobState.DEAD
    assert lifecycle.fail(job(retry_on=(1, 75)), AttemptResult(exit_code=75, error="exit 75"), 1.0).state == JobState.FAILED
    # signals, timeouts and commands that could not run follow the normal rules
    for other in (AttemptResult(exit_code=-9, error="killed by SIGKILL"),
                  AttemptResult(exit_code=1, error="timed out after 3s"),
                  AttemptResult(exit_code=127, error="exit 127: command not found"),
                  AttemptResult(exit_code=None, error="executor error")):
        assert lifecycle.fail(job(retry_on=(1,)), other, 1.0).state == JobState.FAILED, other
    assert lifecycle.fail(job(retry_on=(1,), attempts=4), usage, 1.0).state == JobState.DEAD  # none left anyway


def test_dependencies_are_decided_by_the_parents_transition() -> None:
    assert lifecycle.complete(OK).release_children and lifecycle.complete(OK).cascade_reason is None
    assert lifecycle.bury(BAD).cascade_reason == lifecycle.DEPENDENCY_REASON
    assert lifecycle.cancel(job(state=JobState.PENDING)).cascade_reason == lifecycle.DEPENDENCY_REASON
    assert lifecycle.cancelled(BAD).cascade_reason == lifecycle.DEPENDENCY_REASON
    assert lifecycle.retry(BAD, 1.0).cascade_reason is None and not lifecycle.retry(BAD, 1.0).release_children
    assert lifecycle.recover(job(attempts=1)).cascade_reason is None  # failed: it will run again
    assert lifecycle.recover(job(attempts=4)).cascade_reason is not None  # dead
    assert lifecycle.dependency_reason("a", "dead") == "cancelled: it waits on a, which ended dead"


def test_dependants_are_decided_here_and_the_storage_only_applies_them() -> None:
    met = lifecycle.dependants("p", JobState.COMPLETED)
    assert met is not None and met.parent_met and met.state is None
    for state in (JobState.DEAD, JobState.CANCELLED):
        c = lifecycle.dependants("p", state)
        assert c is not None and (c.state, c.from_states) == (JobState.CANCELLED, (JobState.PENDING,))
        assert c.reason == f"cancelled: it waits on p, which ended {state}"
        assert c.cascade_reason == lifecycle.DEPENDENCY_REASON  # and so on down the chain
        assert lifecycle.dependants_of("child", c).reason == "cancelled: it waits on child, which ended cancelled"
    for state in (JobState.PENDING, JobState.PROCESSING, JobState.FAILED):
        assert lifecycle.dependants("p", state) is None
    assert lifecycle.dependants("p", JobState.DEAD, cascade_reason=None) is None
    assert lifecycle.dependants_of("p", lifecycle.complete(OK)) == met
    assert lifecycle.dependants_of("p", lifecycle.retry(BAD, 1.0)) is None


def test_what_may_be_removed_or_purged_is_decided_here() -> None:
    for state in lifecycle.FINISHED_STATES:
        lifecycle.check_removable(job(state=state))
    with pytest.raises(ValidationError, match="cancel it first"):
        lifecycle.check_removable(job(state=JobState.PENDING))
    with pytest.raises(ValidationError, match="only dead jobs"):
        lifecycle.check_removable(job(state=JobState.COMPLETED), [JobState.DEAD])
    lifecycle.check_purgeable([JobState.DEAD])
    with pytest.raises(ValidationError, match="not processing"):
        lifecycle.check_purgeable([JobState.DEAD, JobState.PROCESSING])
