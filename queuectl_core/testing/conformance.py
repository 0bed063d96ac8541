"""The storage conformance suite: the Storage contract as a reusable pytest class.

It imports pytest and queuectl's core only, never a database driver.
"""

from __future__ import annotations

import threading
from typing import Any

# -- the storage conformance suite ------------------------------------------------------------
try:
    import pytest
except ImportError:  # register_plugin works without pytest; only the suite below needs it
    pytest = None  # type: ignore[assignment]


def _fixture(fn: Any) -> Any:
    return pytest.fixture(fn) if pytest is not None else fn


def _in_threads(run: Any, count: int, timeout: float) -> None:
    """Run ``run(0)`` … ``run(count - 1)`` at once, one thread each, and wait for them all."""
    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


class StorageConformance:
    """The Storage contract as a pytest test class: subclass it once per backend.

    A subclass provides a ``storage_factory`` fixture: a callable that opens a new Storage (a new
    connection) on one empty queue shared by every call within the test, and closes what it opened
    at teardown (any callable works: a lambda, a class, a function defined anywhere). ``storage``
    is the first such instance, wrapped with :func:`~queuectl_core.storage.capabilities.with_fallbacks` as
    core uses it: the suite checks the optional capabilities a storage has, and core's fallbacks
    (on its required methods) for the rest. Tests that need two connections (wake-ups, concurrent
    claims) call the factory again. Tolerances allow for millisecond-precision clocks and
    a loaded CI machine; nothing here sleeps longer than about a second.

    ::

        class TestMyStorage(StorageConformance):
            @pytest.fixture
            def storage_factory(self, tmp_path):
                opened = []
                def factory():
                    opened.append(MyStorage(tmp_path / "q"))
                    return opened[-1]
                yield factory
                for s in opened:
                    s.close()
    """

    # How far apart two clock readings of one event may be (database round trips, ms rounding).
    SLACK = 1.0

    @_fixture
    def storage(self, storage_factory: Any) -> Any:
        return self.connect(storage_factory)

    @staticmethod
    def connect(storage_factory: Any) -> Any:
        """A new storage from the factory, with every optional capability: its own where it has
        one, core's fallback where not (as core uses it), so the suite checks both."""
        from queuectl_core.storage.capabilities import with_fallbacks

        return with_fallbacks(storage_factory())

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def new(job_id: str, command: str = "true", **kw: Any) -> Any:
        from queuectl_core.jobs.models import NewJob

        kw.setdefault("max_retries", 3)
        return NewJob(id=job_id, command=command, **kw)

    @staticmethod
    def ok(**kw: Any) -> Any:
        from queuectl_core.jobs.records import AttemptResult

        return AttemptResult(exit_code=0, **kw)

    @staticmethod
    def bad(**kw: Any) -> Any:
        from queuectl_core.jobs.records import AttemptResult

        kw.setdefault("error", "exit status 1")
        kw.setdefault("exit_code", 1)
        return AttemptResult(**kw)

    def ago(self, storage: Any, seconds: float) -> Any:
        from datetime import timedelta

        return storage.now() - timedelta(seconds=seconds)

    def claim_ids(self, storage: Any, n: int = 1000) -> list[str]:
        out = []
        for _ in range(n):
            job = storage.claim("w", 30)
            if job is None:
                break
            out.append(job.id)
        return out

    def assert_near(self, when: Any, expected: Any, slack: float | None = None) -> None:
        delta = abs((when - expected).total_seconds())
        assert delta <= (slack if slack is not None else self.SLACK), f"{when} is {delta:.3f}s from {expected}"

    # -- the lifecycle's changes, applied (what a worker and the CLI do) -------------------
    @staticmethod
    def complete(storage: Any, job_id: str, token: Any, result: Any) -> Any:
        from queuectl_core.jobs import lifecycle

        return storage.apply(job_id, token, lifecycle.complete(result))

    @staticmethod
    def retry(storage: Any, job_id: str, token: Any, result: Any, delay: float) -> Any:
        from queuectl_core.jobs import lifecycle

        return storage.apply(job_id, token, lifecycle.retry(result, delay))

    @staticmethod
    def bury(storage: Any, job_id: str, token: Any, result: Any) -> Any:
        from queuectl_core.jobs import lifecycle

        return storage.apply(job_id, token, lifecycle.bury(result))

    @staticmethod
    def release(storage: Any, job_id: str, token: Any) -> Any:
        from queuectl_core.jobs import lifecycle

        job = storage.get(job_id)
        return storage.apply(job_id, token, lifecycle.release(job)) if job is not None else None

    @staticmethod
    def heartbeat(storage: Any, job_id: str, token: Any, lease_seconds: float) -> bool:
        from queuectl_core.jobs import lifecycle

        return storage.apply(job_id, token, lifecycle.heartbeat(lease_seconds)) is not None

    @staticmethod
    def recover(storage: Any) -> list[Any]:
        from queuectl_core.jobs import lifecycle

        out = []
        for job in storage.expired():
            updated = storage.apply(job.id, job.lease_token, lifecycle.recover(job))
            if updated is not None:
                out.append(updated)
        return out

    @staticmethod
    def replay(storage: Any, job_id: str) -> Any:
        from queuectl_core.control.actions import replay

        return replay(storage, job_id)

    # -- enqueue, get, list, counts -------------------------------------------------------
    def test_enqueue_returns_pending_jobs_and_get_reads_them(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        before = storage.now()
        jobs = storage.enqueue([self.new("a", "echo a", max_retries=2, priority=5, timeout=1.5),
                                self.new("b")])
        assert [j.id for j in jobs] == ["a", "b"]
        a = storage.get("a")
        assert a is not None
        assert (a.command, a.state, a.attempts, a.max_retries, a.priority, a.timeout) == \
            ("echo a", JobState.PENDING, 0, 2, 5, 1.5)
        assert a.created_at.tzinfo is not None and a.run_at.tzinfo is not None
        self.assert_near(a.created_at, before)
        self.assert_near(a.run_at, a.created_at, 0.01)
        assert a.lease_token is None and a.lease_expires_at is None and a.last_error is None
        assert jobs[0].id == a.id and jobs[0].state == JobState.PENDING
        assert storage.get("missing") is None

    def test_enqueue_run_at_and_delay(self, storage: Any) -> None:
        from datetime import timedelta

        at = (storage.now() + timedelta(hours=1)).replace(microsecond=0)
        storage.enqueue([self.new("at", run_at=at), self.new("later", delay=30.0)])
        assert storage.get("at").run_at == at
        later = storage.get("later")
        self.assert_near(later.run_at, later.created_at + timedelta(seconds=30), 0.01)

    def test_enqueue_is_all_or_nothing_and_names_the_duplicate(self, storage: Any) -> None:
        from queuectl_core.errors import DuplicateJobError

        storage.enqueue([self.new("dup", "echo original")])
        with pytest.raises(DuplicateJobError) as info:
            storage.enqueue([self.new("fresh1"), self.new("dup", "echo other"), self.new("fresh2")])
        assert info.value.job_id == "dup" and "dup" in str(info.value)
        assert storage.get("fresh1") is None and storage.get("fresh2") is None
        assert storage.get("dup").command == "echo original"
        # A duplicate inside one batch is refused the same way, with nothing inserted.
        with pytest.raises(DuplicateJobError) as info:
            storage.enqueue([self.new("x1"), self.new("twice"), self.new("twice")])
        assert info.value.job_id == "twice"
        assert storage.get("x1") is None and storage.get("twice") is None
        assert storage.enqueue([]) == []

    def test_enqueue_many_in_one_call(self, storage: Any) -> None:
        ids = [f"bulk{i:05d}" for i in range(2000)]
        jobs = storage.enqueue([self.new(i) for i in ids])
        assert [j.id for j in jobs] == ids
        assert len(storage.list_jobs()) == 2000

    def test_enqueue_stream_is_one_transaction_and_reads_back(self, storage: Any) -> None:
        """``enqueue_stream``: batches (large ones take a backend's fast path) in one transaction;
        an exception from the batches, or a duplicate in a late batch, leaves nothing behind."""
        from datetime import timedelta

        from queuectl_core.errors import DuplicateJobError

        at = (storage.now() + timedelta(hours=1)).replace(microsecond=0)

        def batch(b: int) -> list[Any]:
            return [self.new(f"s{b}-{i}", f"echo '{b}\t{i}' \\ x\ny", priority=i % 3, delay=5.0 if i % 4 == 1 else None,
                             run_at=at if i % 4 == 2 else None, timeout=2.5 if i % 2 else None, queue=f"sq{i % 2}",
                             unique_key=f"sk{b}-{i}" if i % 5 == 0 else None, retry_on=(1, 75) if i % 7 == 0 else None,
                             cwd="/tmp", env={"A": "1\t2"} if i % 3 == 0 else {}, tags=("t1", "t2") if i % 2 else (),
                             after=(f"s0-{i}",) if b == 2 and i < 3 else ())
                    for i in range(300)]

        def failing() -> Any:
            yield batch(0)
            yield batch(1)
            raise RuntimeError("a bad line")

        with pytest.raises(RuntimeError):
            storage.enqueue_stream(failing())
        assert storage.get("s0-0") is None and storage.count_jobs() == 0
        storage.enqueue([self.new("taken")])
        late = batch(2)
        late[-1] = self.new("taken")
        with pytest.raises(DuplicateJobError) as info:
            storage.enqueue_stream(iter([batch(0), batch(1), late]))
        assert info.value.job_id == "taken" and storage.count_jobs() == 1
        back = [j for b in storage.enqueue_stream(iter([batch(0), batch(1), batch(2)])) for j in b]
        assert [j.id for j in back] == [f"s{b}-{i}" for b in range(3) for i in range(300)]
        assert back == [storage.get(j.id) for j in back]
        assert storage.get("s2-1").waiting == 1 and storage.get("s1-1").waiting == 0
        assert storage.get("s0-2").run_at == at

    def test_list_jobs_newest_first_state_filter_and_limit(self, storage: Any) -> None:
        import time

        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new(i) for i in ("c", "a", "b")])  # one batch: one created_at, then id
        time.sleep(0.01)
        storage.enqueue([self.new("0-later")])  # created later: first, whatever its id
        assert [j.id for j in storage.list_jobs()] == ["0-later", "c", "b", "a"]
        assert [j.id for j in storage.list_jobs(limit=2)] == ["0-later", "c"]
        job = storage.claim("w", 30)
        self.complete(storage, job.id, job.lease_token, self.ok())
        assert [j.id for j in storage.list_jobs(JobState.COMPLETED)] == [job.id]
        pending = [i for i in ("0-later", "c", "b", "a") if i != job.id]
        assert [j.id for j in storage.list_jobs(JobState.PENDING)] == pending
        assert [j.id for j in storage.list_jobs(JobState.PENDING, limit=1)] == pending[:1]
        assert storage.list_jobs(JobState.DEAD) == []

    def test_list_jobs_pages_with_before(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new(i) for i in ("c", "a", "b", "d")])
        assert [j.id for j in storage.list_jobs(limit=2)] == ["d", "c"]
        assert [j.id for j in storage.list_jobs(limit=2, before="c")] == ["b", "a"]
        assert storage.list_jobs(limit=2, before="a") == []
        assert storage.list_jobs(before="no-such-job") == []
        assert [j.id for j in storage.list_jobs(JobState.PENDING, before="d")] == ["c", "b", "a"]

    def test_attempts_by_state(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        assert storage.attempts_by_state() == {s: 0 for s in JobState}
        storage.enqueue([self.new(i, max_retries=3) for i in ("x", "y")])
        job = storage.claim("w", 30)
        self.retry(storage, job.id, job.lease_token, self.bad(), 0)
        job = storage.claim("w", 30)  # the other job, or the same one again
        self.complete(storage, job.id, job.lease_token, self.ok())
        totals = storage.attempts_by_state()
        assert sum(totals.values()) == 2 and totals[JobState.COMPLETED] >= 1

    def test_counts_include_every_state(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        assert storage.counts() == {s: 0 for s in JobState}
        storage.enqueue([self.new(i, max_retries=0) for i in ("p1", "p2", "c", "f", "d", "r")])
        for outcome in ("c", "f", "d", "r"):
            job = storage.claim("w", 30)
            if outcome == "c":
                self.complete(storage, job.id, job.lease_token, self.ok())
            elif outcome == "f":
                self.retry(storage, job.id, job.lease_token, self.bad(), 3600)
            elif outcome == "d":
                self.bury(storage, job.id, job.lease_token, self.bad())
        assert storage.counts() == {JobState.PENDING: 2, JobState.PROCESSING: 1, JobState.COMPLETED: 1,
                                    JobState.FAILED: 1, JobState.DEAD: 1, JobState.CANCELLED: 0}

    # -- claim ----------------------------------------------------------------------------
    def test_claim_order_priority_then_run_at_then_id(self, storage: Any) -> None:
        ten_ago = self.ago(storage, 10)
        storage.enqueue([
            self.new("low-old", priority=0, run_at=self.ago(storage, 50)),
            self.new("high-b", priority=9, run_at=ten_ago),
            self.new("high-a", priority=9, run_at=ten_ago),
            self.new("high-older", priority=9, run_at=self.ago(storage, 20)),
            self.new("mid", priority=3),
            self.new("negative", priority=-5, run_at=self.ago(storage, 100)),
        ])
        assert self.claim_ids(storage) == ["high-older", "high-a", "high-b", "mid", "low-old", "negative"]

    def test_claim_waits_for_run_at(self, storage: Any) -> None:
        import time

        storage.enqueue([self.new("soon", delay=0.4), self.new("future", delay=3600)])
        assert storage.claim("w", 30) is None
        time.sleep(0.6)
        job = storage.claim("w", 30)
        assert job is not None and job.id == "soon"
        assert storage.claim("w", 30) is None

    def test_claim_takes_a_lease_and_counts_the_attempt(self, storage: Any) -> None:
        from datetime import timedelta

        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j")])
        before = storage.now()
        job = storage.claim("worker-1", 30)
        assert job.state == JobState.PROCESSING and job.attempts == 1 and job.worker_id == "worker-1"
        assert job.lease_token
        self.assert_near(job.lease_expires_at, before + timedelta(seconds=30))
        stored = storage.get("j")
        assert (stored.state, stored.attempts, stored.lease_token) == (JobState.PROCESSING, 1, job.lease_token)
        assert storage.claim("worker-2", 30) is None  # not handed out twice
        self.retry(storage, job.id, job.lease_token, self.bad(), 0)
        again = storage.claim("worker-2", 30)
        assert again.id == "j" and again.attempts == 2 and again.lease_token != job.lease_token

    # -- fencing --------------------------------------------------------------------------
    def test_heartbeat_extends_only_with_the_current_token(self, storage: Any) -> None:
        import time

        storage.enqueue([self.new("j")])
        job = storage.claim("w", 2)
        assert self.heartbeat(storage, "j", "not-the-token", 600) is False
        assert storage.get("j").lease_expires_at == job.lease_expires_at
        time.sleep(0.05)
        assert self.heartbeat(storage, "j", job.lease_token, 600) is True
        extended = storage.get("j").lease_expires_at
        assert (extended - job.lease_expires_at).total_seconds() > 500
        self.complete(storage, "j", job.lease_token, self.ok())
        assert self.heartbeat(storage, "j", job.lease_token, 600) is False
        assert self.heartbeat(storage, "missing", job.lease_token, 600) is False

    def test_stale_token_changes_nothing(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j")])
        job = storage.claim("w", 30)
        before = storage.get("j")
        assert self.complete(storage, "j", "stale", self.ok()) is None
        assert self.retry(storage, "j", "stale", self.bad(), 1) is None
        assert self.bury(storage, "j", "stale", self.bad()) is None
        assert self.release(storage, "j", "stale") is None
        after = storage.get("j")
        assert after == before and after.state == JobState.PROCESSING and after.lease_token == job.lease_token

    def test_a_newer_claim_fences_out_the_old_worker(self, storage: Any) -> None:
        import time

        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j")])
        old = storage.claim("old", 0.05)
        time.sleep(0.15)
        assert [j.id for j in self.recover(storage)] == ["j"]
        new = storage.claim("new", 30)
        assert new.id == "j" and new.lease_token != old.lease_token
        assert self.heartbeat(storage, "j", old.lease_token, 30) is False
        assert self.complete(storage, "j", old.lease_token, self.ok(output_tail="old")) is None
        assert self.bury(storage, "j", old.lease_token, self.bad()) is None
        assert self.release(storage, "j", old.lease_token) is None
        assert storage.get("j").state == JobState.PROCESSING
        done = self.complete(storage, "j", new.lease_token, self.ok(output_tail="new"))
        assert done.state == JobState.COMPLETED and storage.get("j").output_tail == "new"

    # -- outcomes ---------------------------------------------------------------------------
    def test_complete_records_the_attempt(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j")])
        job = storage.claim("w", 30)
        done = self.complete(storage, "j", job.lease_token, self.ok(log_path="/logs/j.1.log", output_tail="hi\n"))
        assert done.state == JobState.COMPLETED and done.attempts == 1
        stored = storage.get("j")
        assert (stored.state, stored.last_exit_code, stored.log_path, stored.output_tail) == \
            (JobState.COMPLETED, 0, "/logs/j.1.log", "hi\n")
        assert stored.lease_expires_at is None
        # A repeat of the same write may return the job (idempotent) or None, but changes nothing.
        self.complete(storage, "j", job.lease_token, self.ok(output_tail="again"))
        assert storage.get("j") == stored
        assert storage.claim("w", 30) is None

    def test_output_with_nul_bytes_is_stored(self, storage: Any) -> None:
        storage.enqueue([self.new("j")])
        job = storage.claim("w", 30)
        assert self.complete(storage, "j", job.lease_token, self.ok(output_tail="a\x00b")) is not None
        assert storage.get("j").output_tail.startswith("a")

    def test_fail_with_retry_schedules_it(self, storage: Any) -> None:
        import time
        from datetime import timedelta

        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j")])
        job = storage.claim("w", 30)
        before = storage.now()
        failed = self.retry(storage, "j", job.lease_token, self.bad(error="exit status 3", output_tail="boom"), 0.5)
        assert failed.state == JobState.FAILED and failed.attempts == 1
        self.assert_near(failed.run_at, before + timedelta(seconds=0.5), 0.3)
        stored = storage.get("j")
        assert (stored.last_exit_code, stored.last_error, stored.output_tail) == (1, "exit status 3", "boom")
        assert storage.next_run_at() == stored.run_at
        assert storage.claim("w", 30) is None  # not before its retry time
        time.sleep(max(0.0, (stored.run_at - storage.now()).total_seconds()) + 0.1)
        again = storage.claim("w", 30)
        assert again is not None and again.id == "j" and again.attempts == 2

    def test_fail_without_retry_is_dead(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j", max_retries=0)])
        job = storage.claim("w", 30)
        dead = self.bury(storage, "j", job.lease_token, self.bad())
        assert dead.state == JobState.DEAD
        assert [j.id for j in storage.list_jobs(JobState.DEAD)] == ["j"]
        assert storage.claim("w", 30) is None
        assert storage.next_run_at() is None

    def test_release_hands_the_job_back_uncounted(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j")])
        job = storage.claim("w", 30)
        released = self.release(storage, "j", job.lease_token)
        assert released.state == JobState.PENDING and released.attempts == 0
        assert released.lease_token is None and released.lease_expires_at is None
        assert self.release(storage, "j", job.lease_token) is None
        again = storage.claim("w", 30)
        assert again.id == "j" and again.attempts == 1

    # -- lost workers and the DLQ -------------------------------------------------------------
    def test_recover_expired(self, storage: Any) -> None:
        import time

        from queuectl_core.jobs.models import JobState

        # priorities fix the claim order: the first two get short leases
        storage.enqueue([self.new("retry", max_retries=1, priority=3), self.new("last", max_retries=0, priority=2),
                         self.new("alive", max_retries=0, priority=1)])
        storage.claim("w", 0.05)
        storage.claim("w", 0.05)
        alive = storage.claim("w", 60)
        time.sleep(0.2)
        recovered = {j.id: j for j in self.recover(storage)}
        assert set(recovered) == {"retry", "last"}
        assert recovered["retry"].state == JobState.FAILED and recovered["last"].state == JobState.DEAD
        for job in recovered.values():
            assert job.last_error and job.lease_token is None and job.lease_expires_at is None
        self.assert_near(storage.get("retry").run_at, storage.now())
        assert storage.get("alive").state == JobState.PROCESSING
        assert self.recover(storage) == []
        again = storage.claim("w", 30)
        assert again.id == "retry" and again.attempts == 2
        assert self.complete(storage, "alive", alive.lease_token, self.ok()) is not None

    def test_retry_dead(self, storage: Any) -> None:
        from queuectl_core.errors import JobNotFoundError, QueuectlError
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("d", max_retries=0), self.new("p")])
        job = storage.claim("w", 30)
        assert job.id == "d"
        self.bury(storage, "d", job.lease_token, self.bad())
        retried = self.replay(storage, "d")
        assert retried.state == JobState.PENDING and retried.attempts == 0
        self.assert_near(retried.run_at, storage.now())
        assert storage.get("d").state == JobState.PENDING
        with pytest.raises(QueuectlError):
            self.replay(storage, "p")  # pending, not dead
        assert storage.get("p").state == JobState.PENDING
        with pytest.raises(JobNotFoundError):
            self.replay(storage, "missing")
        again = {j.id: j for j in (storage.claim("w", 30), storage.claim("w", 30))}
        assert set(again) == {"d", "p"} and again["d"].attempts == 1

    def test_next_run_at(self, storage: Any) -> None:
        from datetime import timedelta

        assert storage.next_run_at() is None
        storage.enqueue([self.new("b", delay=60), self.new("a", delay=30)])
        self.assert_near(storage.next_run_at(), storage.get("a").run_at, 0.001)
        storage.enqueue([self.new("now")])
        job = storage.claim("w", 30)
        assert job.id == "now"
        # processing, completed and dead jobs do not count
        self.assert_near(storage.next_run_at(), storage.now() + timedelta(seconds=30))

    # -- apply: the fenced compare-and-set every transition goes through -----------------------
    def test_apply_requires_the_from_state(self, storage: Any) -> None:
        import dataclasses

        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j", max_retries=0)])
        job = storage.claim("w", 30)
        self.bury(storage, "j", job.lease_token, self.bad())
        dead = storage.get("j")
        # a replay decided against an older read (the job was pending) no longer applies
        stale_read = dataclasses.replace(dead, state=JobState.PENDING)
        assert storage.apply("j", None, lifecycle.cancel(stale_read)) is None
        assert storage.get("j") == dead
        assert storage.apply("missing", None, lifecycle.replay(dead)) is None

    def test_a_repeated_final_write_returns_the_row_and_changes_nothing(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j"), self.new("k")])
        for job_id, write in (("j", lambda s, t: self.complete(s, "j", t, self.ok(output_tail="1"))),
                              ("k", lambda s, t: self.bury(s, "k", t, self.bad(output_tail="1")))):
            job = storage.claim("w", 30)
            assert job.id == job_id
            first = write(storage, job.lease_token)
            # finished rows keep their token (the lease expiry is cleared), so a write retried
            # after a lost reply is recognised instead of reported as a lost lease
            assert first.lease_token == job.lease_token and first.lease_expires_at is None
            assert write(storage, job.lease_token) == first
            assert storage.get(job_id) == first
        assert storage.get("j").state == JobState.COMPLETED and storage.get("k").state == JobState.DEAD

    def test_expired_lists_only_expired_leases(self, storage: Any) -> None:
        import time

        storage.enqueue([self.new("short", priority=2), self.new("long", priority=1), self.new("waiting")])
        short = storage.claim("w", 0.05)
        storage.claim("w", 60)
        assert short.id == "short"
        time.sleep(0.2)
        expired = storage.expired()
        assert [j.id for j in expired] == ["short"]
        assert expired[0].lease_token == short.lease_token
        # a heartbeat that lands first wins: recovery applies only to a lease still expired
        from queuectl_core.jobs import lifecycle

        assert self.heartbeat(storage, "short", short.lease_token, 60)
        assert storage.apply("short", short.lease_token, lifecycle.recover(expired[0])) is None
        assert storage.expired() == []

    def test_cancel_restart_and_a_cancel_request(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.errors import QueuectlError
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("run", priority=9), self.new("wait"), self.new("later", delay=3600)])
        run = storage.claim("w", 30)
        assert actions.cancel(storage, "wait").state == JobState.CANCELLED
        assert actions.cancel(storage, "later").state == JobState.CANCELLED
        assert storage.next_run_at() is None and storage.claim("w", 30) is None
        with pytest.raises(QueuectlError):
            actions.cancel(storage, "wait")  # already finished
        asked = actions.cancel(storage, "run")
        assert asked.state == JobState.PROCESSING and asked.cancel_requested
        beat = storage.apply("run", run.lease_token, lifecycle.heartbeat(30))
        assert beat is not None and beat.cancel_requested  # the running worker learns of it here
        done = storage.apply("run", run.lease_token, lifecycle.cancelled(self.bad(exit_code=None, error="killed")))
        assert done.state == JobState.CANCELLED and not done.cancel_requested
        assert storage.counts()[JobState.CANCELLED] == 3
        again = actions.restart(storage, "run", command="echo again")
        assert (again.state, again.attempts, again.command, again.lease_token) == \
            (JobState.PENDING, 0, "echo again", None)
        with pytest.raises(QueuectlError):
            actions.restart(storage, "run")  # pending: not finished
        claimed = storage.claim("w", 30)
        assert claimed.id == "run" and claimed.attempts == 1 and not claimed.cancel_requested

    # -- control and visibility -----------------------------------------------------------------
    def test_cwd_env_and_tags_round_trip(self, storage: Any) -> None:
        storage.enqueue([self.new("a", cwd="/tmp", env={"X": "1", "PASSWORD": "s"}, tags=("nightly", "a_b")),
                         self.new("b")])
        a, b = storage.get("a"), storage.get("b")
        assert (a.cwd, a.env, a.tags) == ("/tmp", {"X": "1", "PASSWORD": "s"}, ("nightly", "a_b"))
        assert (b.cwd, b.env, b.tags) == (None, {}, ())
        assert [j.id for j in storage.list_jobs(tag="nightly")] == ["a"]
        assert storage.list_jobs(tag="axb") == []  # LIKE's wildcards are escaped
        assert storage.count_jobs(tag="a_b") == 1 and storage.count_jobs() == 2

    def test_ids_with_prefix_are_sorted_and_an_exact_id_is_always_among_them(self, storage: Any) -> None:
        ids = ["ab", "ab-1", "ab.2", "ab9", "abZ", "abc", "abz", "ab:x", "ac", "aB", "b", "1m9", "1m:"]
        storage.enqueue([self.new(i) for i in ids])
        assert storage.ids_with_prefix("ab", 100) == sorted(i for i in ids if i.startswith("ab"))
        assert storage.ids_with_prefix("ab", 2)[0] == "ab"  # the exact id, however many share it
        assert storage.ids_with_prefix("abz", 5) == ["abz"]
        assert storage.ids_with_prefix("ab:", 5) == ["ab:x"] and storage.ids_with_prefix("ab9", 5) == ["ab9"]
        assert storage.ids_with_prefix("1m9", 5) == ["1m9"] and storage.ids_with_prefix("1m", 5) == ["1m9", "1m:"]
        assert storage.ids_with_prefix("aB", 5) == ["aB"]  # case matters
        assert storage.ids_with_prefix("abd", 5) == [] and storage.ids_with_prefix("zz", 5) == []
        assert len(storage.ids_with_prefix("a", 3)) == 3

    def test_list_and_count_several_states(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("x"), self.new("y"), self.new("z")])
        job = storage.claim("w", 30)
        self.complete(storage, job.id, job.lease_token, self.ok(duration=1.5))
        done = storage.get(job.id)
        assert done.last_duration == 1.5
        both = storage.list_jobs(states=[JobState.COMPLETED, JobState.PENDING])
        assert len(both) == 3 and storage.count_jobs(states=[JobState.COMPLETED]) == 1
        assert storage.count_jobs(JobState.PENDING) == 2

    def test_pending_summary_splits_ready_and_scheduled(self, storage: Any) -> None:
        assert storage.pending_summary() == (0, 0, None)
        storage.enqueue([self.new("now"), self.new("later", delay=3600), self.new("also")])
        ready, scheduled, oldest = storage.pending_summary()
        assert (ready, scheduled) == (2, 1)
        self.assert_near(oldest, storage.get("now").run_at, 0.01)
        # a job still waiting on `after` is neither ready nor scheduled
        storage.enqueue([self.new("held", after=("now",)), self.new("held-later", after=("now",), delay=3600)])
        assert storage.pending_summary()[:2] == (2, 1)

    def test_provides_the_required_protocol(self, storage_factory: Any) -> None:
        from queuectl_core.interfaces import Storage

        assert isinstance(storage_factory(), Storage)

    def assert_tallies_exact(self, storage: Any) -> None:
        """counts, queues, attempts_by_state, pending_summary and count_jobs agree with the jobs
        themselves (a backend may answer them from counters it maintains: they must stay exact)."""
        from collections import Counter

        from queuectl_core.jobs.models import JobState

        jobs = storage.list_jobs()
        now = storage.now()
        states = Counter(j.state for j in jobs)
        assert storage.counts() == {s: states.get(s, 0) for s in JobState}
        assert storage.attempts_by_state() == {s: sum(j.attempts for j in jobs if j.state == s) for s in JobState}
        per_queue: dict[str, Counter[str]] = {}
        for j in jobs:
            per_queue.setdefault(j.queue, Counter())[str(j.state)] += 1
        listed = {q.name: {s: n for s, n in q.counts.items() if n} for q in storage.queues()}
        assert {name: c for name, c in listed.items() if c} == {name: dict(c) for name, c in per_queue.items()}
        pending = [j for j in jobs if j.state == JobState.PENDING and not j.waiting]
        ready, scheduled, _ = storage.pending_summary()
        assert (ready, scheduled) == (sum(j.run_at <= now for j in pending), sum(j.run_at > now for j in pending))
        assert storage.count_jobs() == len(jobs)
        for some in ([JobState.PENDING], [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED], [JobState.FAILED]):
            assert storage.count_jobs(states=some) == sum(states.get(s, 0) for s in some)
            assert storage.count_jobs(states=some, queue="other") == \
                sum(1 for j in jobs if j.state in some and j.queue == "other")
        assert storage.count_jobs(queue="other") == sum(j.queue == "other" for j in jobs)

    def test_counts_stay_exact_through_every_change(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        self.assert_tallies_exact(storage)
        storage.enqueue([self.new("a", priority=9, max_retries=0), self.new("b", priority=8, max_retries=1),
                         self.new("c", priority=7), self.new("later", delay=3600),
                         self.new("child", after=("a",), priority=6), self.new("grandchild", after=("child",)),
                         self.new("o1", queue="other", priority=5), self.new("o2", queue="other", tags=("t",))])
        self.assert_tallies_exact(storage)
        a = storage.claim("w", 30)
        assert a.id == "a"
        self.assert_tallies_exact(storage)
        self.complete(storage, a.id, a.lease_token, self.ok())  # releases child
        self.assert_tallies_exact(storage)
        b = storage.claim("w", 30)
        self.retry(storage, b.id, b.lease_token, self.bad(), 3600)  # failed, retry later
        self.assert_tallies_exact(storage)
        c = storage.claim("w", 30)
        self.bury(storage, c.id, c.lease_token, self.bad())  # the DLQ
        self.assert_tallies_exact(storage)
        child = storage.claim("w", 30)
        assert child.id == "child"
        storage.apply(child.id, child.lease_token, lifecycle.release(child))  # handed back
        self.assert_tallies_exact(storage)
        actions.replay(storage, c.id)  # back to pending, attempts reset
        self.assert_tallies_exact(storage)
        actions.cancel(storage, "child")  # cancels grandchild down the chain
        assert storage.get("grandchild").state == JobState.CANCELLED
        self.assert_tallies_exact(storage)
        actions.cancel_many(storage, ["o1", "o2"])
        actions.restart(storage, "o2")
        self.assert_tallies_exact(storage)
        actions.remove(storage, ["o1"])
        self.assert_tallies_exact(storage)
        actions.purge(storage, older_than=-1e9)
        self.assert_tallies_exact(storage)
        assert storage.count_jobs() == len(storage.list_jobs()) > 0

    def test_apply_many_is_all_or_nothing(self, storage: Any) -> None:
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("p"), self.new("q")])
        p, q = storage.get("p"), storage.get("q")
        storage.claim("w", 30)  # takes p: the cancel decided on "pending" no longer applies to it
        assert storage.apply_many([("q", None, lifecycle.cancel(q)), ("p", None, lifecycle.cancel(p))]) is None
        assert storage.get("q").state == JobState.PENDING
        done = storage.apply_many([("q", None, lifecycle.cancel(q))])
        assert [j.state for j in done] == [JobState.CANCELLED]

    def test_delete_is_all_or_nothing_and_only_in_the_states_given(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.jobs.lifecycle import FINISHED_STATES

        storage.enqueue([self.new("done"), self.new("wait"), self.new("gone")])
        actions.cancel(storage, "done")
        actions.cancel(storage, "gone")
        assert storage.delete(["done", "wait"], FINISHED_STATES) is None
        assert storage.delete(["done", "nosuch"], FINISHED_STATES) is None
        assert storage.get("done") is not None
        removed = storage.delete(["done", "gone"], FINISHED_STATES)
        assert sorted(j.id for j in removed) == ["done", "gone"]
        assert storage.get("done") is None and storage.get("wait") is not None

    def test_purge_deletes_only_old_finished_jobs(self, storage: Any) -> None:
        import time

        from queuectl_core.control import actions
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("old"), self.new("new"), self.new("waiting")])
        actions.cancel(storage, "old")
        time.sleep(0.3)
        actions.cancel(storage, "new")
        assert storage.purge([JobState.COMPLETED], 0.15) == []
        assert storage.purge([JobState.CANCELLED], 0.15) == [("old", None)]
        time.sleep(0.02)  # "older than 0s" is strictly older: not within the same clock tick
        assert [i for i, _ in storage.purge([JobState.CANCELLED, JobState.DEAD], 0)] == ["new"]
        assert storage.get("waiting") is not None

    def test_a_heartbeat_stores_the_running_attempts_output_so_far(self, storage: Any) -> None:
        from queuectl_core.jobs import lifecycle

        storage.enqueue([self.new("h")])
        job = storage.claim("w", 30)
        beat = storage.apply("h", job.lease_token, lifecycle.heartbeat(30, ("/logs/h.1.log", "so far\n")))
        assert (beat.log_path, beat.output_tail, beat.state) == ("/logs/h.1.log", "so far\n", job.state)
        done = self.complete(storage, "h", job.lease_token, self.ok(log_path="/logs/h.1.log", output_tail="all\n"))
        assert done.output_tail == "all\n"

    def test_live_workers_show_the_claimed_job_at_once(self, storage: Any) -> None:
        storage.register_worker(self._info(storage, "worker-c"))
        storage.enqueue([self.new("j")])
        job = storage.claim("worker-c", 30)
        (w,) = storage.live_workers()
        assert w.current_job == "j"
        self.assert_near(w.current_job_since, job.updated_at, 0.01)

    def test_live_workers_show_every_job_a_worker_holds(self, storage: Any) -> None:
        """A worker with --slots holds several jobs: each is listed, newest claim first."""
        import time

        storage.register_worker(self._info(storage, "worker-s"))
        storage.register_worker(self._info(storage, "worker-t"))
        storage.enqueue([self.new(f"s{i}") for i in range(3)])
        claimed = []
        for _ in range(3):
            claimed.append(storage.claim("worker-s", 30))
            time.sleep(0.01)  # distinct claim times, so newest-first is a fact to check
        live = {w.id: w for w in storage.live_workers()}
        assert [job_id for job_id, _ in live["worker-s"].jobs] == [j.id for j in reversed(claimed)]
        for (_, since), job in zip(live["worker-s"].jobs, reversed(claimed)):
            self.assert_near(since, job.updated_at, 0.01)
        assert live["worker-s"].current_job == claimed[-1].id
        assert live["worker-t"].jobs == () and live["worker-t"].current_job is None
        done = claimed[-1]
        assert self.complete(storage, done.id, done.lease_token, self.ok()) is not None
        live = {w.id: w for w in storage.live_workers()}
        assert [job_id for job_id, _ in live["worker-s"].jobs] == [claimed[1].id, claimed[0].id]

    def test_request_stop_now(self, storage: Any) -> None:
        storage.register_worker(self._info(storage, "worker-n"))
        assert storage.request_stop(now=True) == 1
        assert storage.worker_seen("worker-n", None) == 2

    # -- workers --------------------------------------------------------------------------
    def _info(self, storage: Any, worker_id: str) -> Any:
        import os
        import socket

        from queuectl_core.jobs.records import WorkerInfo

        now = storage.now()
        return WorkerInfo(worker_id, socket.gethostname(), os.getpid(), now, now)

    def test_workers_register_seen_stop_unregister(self, storage: Any) -> None:
        storage.register_worker(self._info(storage, "worker-a"))
        storage.register_worker(self._info(storage, "worker-b"))
        live = storage.live_workers()
        assert [w.id for w in live] == ["worker-a", "worker-b"]
        self.assert_near(live[0].last_seen, storage.now())
        assert not storage.worker_seen("worker-a", "job-7")
        assert {w.id: w.current_job for w in storage.live_workers()}["worker-a"] == "job-7"
        assert storage.request_stop() == 2
        assert storage.worker_seen("worker-a", None) == 1
        assert storage.worker_seen("worker-b", None) == 1
        storage.unregister_worker("worker-a")
        assert [w.id for w in storage.live_workers()] == ["worker-b"]
        storage.unregister_worker("worker-b")
        assert storage.live_workers() == []
        assert storage.request_stop() == 0

    # -- waiting for work -----------------------------------------------------------------
    def _wait_in_thread(self, storage: Any, timeout: float, wakeup_fd: int | None = None) -> Any:
        import time

        out: dict[str, float] = {}

        def wait() -> None:
            start = time.monotonic()
            storage.wait_for_work(timeout, wakeup_fd)
            out["elapsed"] = time.monotonic() - start

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        return thread, out

    def test_wait_for_work_times_out(self, storage: Any) -> None:
        import time

        storage.register_worker(self._info(storage, "waiter"))
        start = time.monotonic()
        storage.wait_for_work(0.3)
        assert 0.25 <= time.monotonic() - start < 3

    def test_wait_for_work_returns_on_enqueue_from_another_connection(self, storage_factory: Any) -> None:
        import time

        waiter, other = self.connect(storage_factory), self.connect(storage_factory)
        waiter.register_worker(self._info(waiter, "waiter"))
        waiter.wait_for_work(0)  # settle anything registering itself may have queued
        thread, out = self._wait_in_thread(waiter, 10)
        time.sleep(0.2)
        sent = time.monotonic()
        other.enqueue([self.new("wake")])
        thread.join(5)
        assert not thread.is_alive(), "wait_for_work missed the wake-up"
        assert out["elapsed"] < 5 and time.monotonic() - sent < 2

    def test_wait_for_work_returns_on_stop_request(self, storage_factory: Any) -> None:
        import time

        waiter, other = self.connect(storage_factory), self.connect(storage_factory)
        waiter.register_worker(self._info(waiter, "waiter"))
        waiter.wait_for_work(0)
        thread, out = self._wait_in_thread(waiter, 10)
        time.sleep(0.2)
        assert other.request_stop() == 1
        thread.join(5)
        assert not thread.is_alive()
        assert waiter.worker_seen("waiter", None) == 1

    def test_wait_for_work_returns_when_wakeup_fd_is_readable(self, storage: Any) -> None:
        import os
        import time

        storage.register_worker(self._info(storage, "waiter"))
        storage.wait_for_work(0)
        r, w = os.pipe()
        try:
            thread, out = self._wait_in_thread(storage, 10, r)
            time.sleep(0.2)
            os.write(w, b"x")
            thread.join(5)
            assert not thread.is_alive()
        finally:
            os.close(r)
            os.close(w)

    # -- concurrency ----------------------------------------------------------------------
    def test_concurrent_claims_never_hand_a_job_out_twice(self, storage_factory: Any) -> None:
        first = self.connect(storage_factory)
        total = 300
        first.enqueue([self.new(f"c{i:04d}", max_retries=0) for i in range(total)])
        workers = [self.connect(storage_factory) for _ in range(6)]
        claimed: list[list[str]] = [[] for _ in workers]
        errors: list[BaseException] = []
        start = threading.Barrier(len(workers))

        def run(n: int) -> None:
            store = workers[n]
            try:
                start.wait()
                while (job := store.claim(f"w{n}", 30)) is not None:
                    claimed[n].append(job.id)
                    assert self.complete(store, job.id, job.lease_token, self.ok()) is not None
            except BaseException as exc:  # reported below, with the thread's name
                errors.append(exc)

        _in_threads(run, len(workers), timeout=120)
        assert not errors, errors
        every = [job_id for ids in claimed for job_id in ids]
        assert len(every) == total and len(set(every)) == total
        from queuectl_core.jobs.models import JobState

        assert first.counts()[JobState.COMPLETED] == total


    # -- many jobs per worker (worker start --slots) ----------------------------------------
    def test_claim_many_takes_up_to_the_limit_in_claim_order_each_with_its_own_lease(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.set_queue("lim", concurrency=1)
        storage.set_queue("off", paused=True)
        storage.enqueue([self.new("low", priority=1), self.new("high", priority=9), self.new("mid", priority=5),
                         self.new("l1", queue="lim", priority=8), self.new("l2", queue="lim", priority=8),
                         self.new("paused", queue="off", priority=9), self.new("later", delay=3600),
                         self.new("child", after=("low",), priority=9)])
        jobs = storage.claim_many("w", 30, 4)
        assert [j.id for j in jobs] == ["high", "l1", "mid", "low"]  # one of "lim" (its limit), none paused
        assert len({j.lease_token for j in jobs}) == 4 and all(j.state == JobState.PROCESSING for j in jobs)
        assert all(j.attempts == 1 and j.worker_id == "w" and j.lease_expires_at is not None for j in jobs)
        assert storage.claim_many("w", 30, 4) == []  # l2 waits on its queue; the rest wait on time or a parent
        assert [j.id for j in storage.claim_many("w", 30, 1, queues=["lim"])] == []

    def test_apply_batch_fences_each_change_on_its_own(self, storage: Any) -> None:
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new(f"b{i}") for i in range(4)])
        jobs = {j.id: j for j in storage.claim_many("w", 5, 4)}
        before = {i: j.lease_expires_at for i, j in jobs.items()}
        out = storage.apply_batch([
            ("b0", jobs["b0"].lease_token, lifecycle.heartbeat(300)),
            ("b1", "stale-token", lifecycle.heartbeat(300)),
            ("b2", jobs["b2"].lease_token, lifecycle.heartbeat(300, ("/logs/b2.1.log", "so far\n"))),
            ("b3", jobs["b3"].lease_token, lifecycle.complete(self.ok())),
            ("b1", "stale-token", lifecycle.complete(self.ok())),
        ])
        assert [j.id if j is not None else None for j in out] == ["b0", None, "b2", "b3", None]
        assert out[0].lease_expires_at > before["b0"] and out[2].output_tail == "so far\n"
        assert storage.get("b1").lease_expires_at == before["b1"]  # the stale token changed nothing
        assert storage.get("b1").state == JobState.PROCESSING
        assert storage.get("b3").state == JobState.COMPLETED
        assert storage.apply_batch([]) == []

    def test_apply_and_claim_records_then_claims_in_one_go(self, storage: Any) -> None:
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.set_queue("one", concurrency=1)
        storage.enqueue([self.new("a", queue="one"), self.new("b", queue="one"), self.new("c"), self.new("d")])
        a, c = storage.claim_many("w", 30, 2)
        assert (a.id, c.id) == ("a", "c")
        # a's completion frees its queue's only slot for b, within the same transaction.
        done, taken = storage.apply_and_claim([("a", a.lease_token, lifecycle.complete(self.ok())),
                                               ("c", "stale", lifecycle.complete(self.ok()))], "w", 30, 3)
        assert [j.state if j else None for j in done] == [JobState.COMPLETED, None]
        assert [j.id for j in taken] == ["b", "d"] and len({j.lease_token for j in taken}) == 2
        assert storage.apply_and_claim([], "w", 30, 2) == ([], [])

    def test_cancel_requests_names_running_jobs_asked_to_stop(self, storage: Any) -> None:
        from queuectl_core.control import actions

        storage.enqueue([self.new("r1"), self.new("r2"), self.new("r3")])
        jobs = {j.id: j for j in storage.claim_many("w", 30, 2)}
        assert storage.cancel_requests(["r1", "r2", "r3"]) == []
        actions.cancel(storage, "r2")
        actions.cancel(storage, "r3")  # pending: cancelled at once, never a request
        assert storage.cancel_requests(["r1", "r2", "r3", "nosuch"]) == [("r2", jobs["r2"].lease_token)]

    # -- queues, limits, pauses, dependencies, unique keys, schedules ---------------------------
    def test_claim_only_from_the_given_queues_and_queue_is_stored(self, storage: Any) -> None:
        storage.enqueue([self.new("a1", queue="a", priority=5), self.new("b1", queue="b"), self.new("d1")])
        assert storage.get("a1").queue == "a" and storage.get("d1").queue == "default"
        assert storage.claim("w", 30, queues=["b"]).id == "b1"
        assert storage.claim("w", 30, queues=["b"]) is None
        assert storage.next_run_at(queues=["b"]) is None
        assert self.claim_ids(storage) == ["a1", "d1"]  # no filter: every queue, priority first

    def test_paused_queue_is_not_claimed_nor_timed_and_resume_wakes(self, storage: Any) -> None:
        storage.enqueue([self.new("p1", queue="p", priority=9), self.new("o1", queue="o")])
        assert {"o", "p"} <= set(storage.set_all_paused(True))
        assert storage.claim("w", 30) is None and storage.next_run_at() is None
        storage.set_queue("o", paused=False)
        assert self.claim_ids(storage) == ["o1"]
        storage.set_queue("p", paused=False)
        assert self.claim_ids(storage) == ["p1"]
        info = {q.name: q for q in storage.queues()}
        assert not info["p"].paused and info["p"].counts["processing"] == 1
        storage.set_queue("never-used", paused=True)  # a queue can be paused before its first job
        assert {q.name: q.paused for q in storage.queues()}["never-used"] is True

    def test_concurrency_limit_is_enforced_by_the_claim(self, storage: Any) -> None:
        storage.set_queue("lim", concurrency=2)
        storage.enqueue([self.new(f"l{i}", queue="lim", priority=9) for i in range(4)] + [self.new("free")])
        first = [storage.claim("w", 30) for _ in range(3)]
        assert [j.id for j in first] == ["l0", "l1", "free"]
        assert storage.claim("w", 30) is None
        assert storage.next_run_at() is None  # a full queue is no reason to wake
        self.complete(storage, "l0", first[0].lease_token, self.ok())
        assert storage.claim("w", 30).id == "l2"
        storage.set_queue("lim", concurrency=0)  # unlimited
        assert storage.claim("w", 30).id == "l3"
        assert {q.name: q.concurrency for q in storage.queues()}["lim"] == 0

    def _processing_seen_by_racing_claimers(self, storage_factory: Any) -> list[int]:
        """Six claimers race for the pending jobs, each completing what it gets at once: how many
        jobs were processing (its own included) each time one of them held a job."""
        from queuectl_core.jobs.models import JobState

        stores = [self.connect(storage_factory) for _ in range(6)]
        seen: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(stores))

        def run(n: int) -> None:
            store = stores[n]
            try:
                barrier.wait()
                for _ in range(2000):
                    job = store.claim(f"w{n}", 30)
                    if job is None:
                        if store.counts()[JobState.PENDING] == 0:
                            return
                        continue
                    seen.append(store.counts()[JobState.PROCESSING])
                    assert self.complete(store, job.id, job.lease_token, self.ok()) is not None
            except BaseException as exc:
                errors.append(exc)

        _in_threads(run, len(stores), timeout=120)
        assert not errors, errors
        return seen

    def test_concurrency_limit_holds_under_racing_claimers(self, storage_factory: Any) -> None:
        first = self.connect(storage_factory)
        first.set_queue("one", concurrency=1)
        first.enqueue([self.new(f"r{i:03d}", queue="one") for i in range(40)])
        # while one holds the queue's only slot, nobody else may be processing
        seen = self._processing_seen_by_racing_claimers(storage_factory)
        assert max(seen) == 1 and len(seen) == 40

    def test_after_holds_a_job_until_every_parent_completed(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("p1"), self.new("p2", priority=-1)])
        [child] = storage.enqueue([self.new("child", after=("p1", "p2"), priority=9)])
        assert child.waiting == 2 and storage.waits_on(["child"]) == {"child": ["p1", "p2"]}
        one = storage.claim("w", 30)
        assert one.id == "p1"
        self.complete(storage, "p1", one.lease_token, self.ok())
        assert storage.get("child").waiting == 1 and storage.waits_on(["child"]) == {"child": ["p2"]}
        two = storage.claim("w", 30)
        assert two.id == "p2"  # the child still waits, whatever its priority
        self.complete(storage, "p2", two.lease_token, self.ok())
        assert storage.claim("w", 30).id == "child"
        # a parent restarted and completed again never releases anything twice
        from queuectl_core.control import actions

        actions.restart(storage, "p1")
        again = storage.claim("w", 30)
        self.complete(storage, "p1", again.lease_token, self.ok())
        assert storage.get("child").state == JobState.PROCESSING and storage.get("child").waiting == 0

    def test_after_with_a_completed_parent_is_ready_and_unknown_parents_refuse_the_batch(self, storage: Any) -> None:
        from queuectl_core.errors import QueuectlError
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("done")])
        job = storage.claim("w", 30)
        self.complete(storage, "done", job.lease_token, self.ok())
        with pytest.raises(QueuectlError, match="nope"):
            storage.enqueue([self.new("x1"), self.new("x2", after=("done", "nope"))])
        assert storage.get("x1") is None and storage.get("x2") is None  # all or nothing
        # a batch may name a job earlier in it
        out = storage.enqueue([self.new("b1"), self.new("b2", after=("b1", "done"))])
        assert [j.waiting for j in out] == [0, 1]
        assert storage.counts()[JobState.PENDING] == 2

    def test_a_dead_or_cancelled_parent_cancels_the_chain_with_reasons(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("top", max_retries=0, priority=1), self.new("mid", after=("top",)),
                         self.new("leaf", after=("mid",)), self.new("other")])
        top = storage.claim("w", 30)
        assert top.id == "top"
        self.bury(storage, "top", top.lease_token, self.bad())
        mid, leaf = storage.get("mid"), storage.get("leaf")
        assert mid.state == JobState.CANCELLED and "top" in mid.last_error and "dead" in mid.last_error
        assert leaf.state == JobState.CANCELLED and "mid" in leaf.last_error and "cancelled" in leaf.last_error
        assert storage.get("other").state == JobState.PENDING
        # a cancelled parent cancels its waiting children too
        storage.enqueue([self.new("c1", after=("other",))])
        actions.cancel(storage, "other")
        assert storage.get("c1").state == JobState.CANCELLED
        # enqueueing after a parent that already ended dead: cancelled at once, with the reason
        [late] = storage.enqueue([self.new("late", after=("top",))])
        assert late.state == JobState.CANCELLED and "top" in late.last_error

    def test_what_happens_to_waiting_jobs_comes_from_the_change(self, storage: Any) -> None:
        """The storage formats the change's own ``cascade_reason`` template with each parent and
        its state, down the chain: it decides nothing itself."""
        import dataclasses

        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("top", max_retries=0, priority=1), self.new("kid", after=("top",)),
                         self.new("grandkid", after=("kid",))])
        top = storage.claim("w", 30)
        change = dataclasses.replace(lifecycle.bury(self.bad()), cascade_reason="gone: {parent} is {state}")
        assert storage.apply("top", top.lease_token, change).state == JobState.DEAD
        assert (storage.get("kid").state, storage.get("kid").last_error) == (JobState.CANCELLED, "gone: top is dead")
        assert storage.get("grandkid").last_error == "gone: kid is cancelled"
        # no template: the lifecycle leaves waiting jobs as they are
        storage.enqueue([self.new("p2", max_retries=0), self.new("c2", after=("p2",))])
        p2 = storage.claim("w", 30)
        storage.apply("p2", p2.lease_token, dataclasses.replace(lifecycle.bury(self.bad()), cascade_reason=None))
        assert (storage.get("c2").state, storage.get("c2").waiting) == (JobState.PENDING, 1)

    def test_unique_key_is_refused_while_held_and_free_after(self, storage: Any) -> None:
        from queuectl_core.errors import UniqueKeyError

        storage.enqueue([self.new("u1", unique_key="k")])
        with pytest.raises(UniqueKeyError, match="u1"):
            storage.enqueue([self.new("u2", unique_key="k"), self.new("other")])
        assert storage.get("u2") is None and storage.get("other") is None
        job = storage.claim("w", 30)
        with pytest.raises(UniqueKeyError):  # processing holds it too
            storage.enqueue([self.new("u3", unique_key="k")])
        self.complete(storage, "u1", job.lease_token, self.ok())
        assert storage.enqueue([self.new("u4", unique_key="k")])[0].unique_key == "k"
        from queuectl_core.control import actions

        with pytest.raises(UniqueKeyError):  # restarting u1 would hold the key twice
            actions.restart(storage, "u1")
        assert storage.get("u1").state == "completed"

    def test_unique_key_of_concurrent_enqueuers_exactly_one_wins(self, storage_factory: Any) -> None:
        from queuectl_core.errors import UniqueKeyError

        stores = [self.connect(storage_factory) for _ in range(8)]
        barrier = threading.Barrier(len(stores))
        won: list[str] = []
        refused: list[str] = []

        def run(n: int) -> None:
            barrier.wait()
            try:
                stores[n].enqueue([self.new(f"e{n}", unique_key="same")])
                won.append(f"e{n}")
            except UniqueKeyError as exc:
                refused.append(str(exc))

        _in_threads(run, len(stores), timeout=60)
        assert len(won) == 1 and len(refused) == 7
        assert all(won[0] in message for message in refused)

    def test_exit_code_rules_are_stored(self, storage: Any) -> None:
        storage.enqueue([self.new("r", retry_on=(1, 75)), self.new("n", no_retry_on=(2,))])
        assert storage.get("r").retry_on == (1, 75) and storage.get("r").no_retry_on is None
        assert storage.get("n").no_retry_on == (2,)

    def test_schedules_are_stored_and_each_tick_enqueued_once(self, storage_factory: Any) -> None:
        from datetime import timedelta

        from queuectl_core.errors import QueuectlError
        from queuectl_core.jobs.records import Schedule

        one, two = self.connect(storage_factory), self.connect(storage_factory)
        one.add_schedule(Schedule(name="s", job={"command": "true", "queue": "cron"}, every=60.0))
        with pytest.raises(QueuectlError):
            two.add_schedule(Schedule(name="s", job={"command": "true"}, every=5.0))
        [s] = two.schedules()
        assert (s.name, s.every, s.cron, s.job, s.paused, s.last_tick) == ("s", 60.0, None,
                                                                             {"command": "true", "queue": "cron"}, False, None)
        tick = s.created_at + timedelta(seconds=60)
        job = self.new("s@tick1", queue="cron")
        assert one.enqueue_tick("s", tick, job).id == "s@tick1"
        assert two.enqueue_tick("s", tick, self.new("s@tick1b")) is None  # the same tick: once
        assert one.enqueue_tick("s", tick - timedelta(seconds=1), self.new("s@older")) is None
        assert two.schedules()[0].last_tick == tick
        assert one.set_schedule_paused("s", True)
        assert one.enqueue_tick("s", tick + timedelta(seconds=60), self.new("s@paused")) is None
        assert one.set_schedule_paused("s", False) and two.schedules()[0].last_tick >= tick
        assert one.remove_schedule("s") and not one.remove_schedule("s") and two.schedules() == []

    def test_burst_remaining_ignores_paused_queues_and_counts_waiting_on_running(self, storage: Any) -> None:
        storage.enqueue([self.new("p", queue="paused"), self.new("parent", queue="elsewhere")])
        storage.enqueue([self.new("child", queue="mine", after=("parent",))])
        storage.set_queue("paused", paused=True)
        assert storage.burst_remaining(["paused"]) == (0, 0)
        assert storage.burst_remaining(["mine"]) == (0, 0)  # its parent is in a queue it does not serve
        parent = storage.claim("w", 30, queues=["elsewhere"])
        assert storage.burst_remaining(["mine"]) == (1, 1)  # ...but once running, it can complete
        self.complete(storage, "parent", parent.lease_token, self.ok())
        assert storage.burst_remaining(["mine"]) == (1, 0)
        assert storage.burst_remaining(None) == (1, 0)

    # -- history: every attempt of a job (the AttemptHistory capability) ------------------------
    def history(self, storage: Any) -> bool:
        """Whether the storage keeps history itself; without it, core's fallback (the job's row)."""
        return "AttemptHistory" in getattr(storage, "native", ())

    def test_every_attempt_is_recorded_and_numbered_across_restart_and_replay(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState
        from queuectl_core.jobs.records import WorkerInfo

        now = storage.now()
        storage.register_worker(WorkerInfo("w", "host-a", 1, now, now))
        storage.enqueue([self.new("j", max_retries=1)])
        first = storage.claim("w", 30)
        assert (first.attempts, first.attempt_number) == (1, 1)
        self.retry(storage, "j", first.lease_token, self.bad(duration=1.5, log_path="/l/j.1.log"), 0)
        second = storage.claim("w", 30)
        assert (second.attempts, second.attempt_number) == (2, 2)
        dead = self.bury(storage, "j", second.lease_token, self.bad(exit_code=-9, error="killed by SIGKILL"))
        assert dead.state == JobState.DEAD
        replayed = self.replay(storage, "j")
        # What describes the last run is cleared until it runs again; the count of tries starts over.
        assert (replayed.attempts, replayed.attempt_number) == (0, 2)
        assert (replayed.last_error, replayed.last_exit_code, replayed.last_duration, replayed.log_path) == (
            None, None, None, None)
        third = storage.claim("w", 30)
        assert (third.attempts, third.attempt_number) == (1, 3)
        assert third.log_path is None  # it describes the running attempt from the claim on
        self.complete(storage, "j", third.lease_token, self.ok(duration=0.5))
        restarted = actions.restart(storage, "j")
        assert (restarted.attempts, restarted.attempt_number, restarted.last_duration) == (0, 3, None)
        fourth = storage.claim("w", 30)
        assert fourth.attempt_number == 4
        attempts = storage.attempts("j")
        if not self.history(storage):
            assert attempts == []  # the fallback knows only a finished last attempt
            return
        assert [a.attempt for a in attempts] == [1, 2, 3]
        one, two, three = attempts
        assert (one.exit_code, one.error, one.duration, one.log_path) == (1, "exit status 1", 1.5, "/l/j.1.log")
        assert (two.exit_code, two.signal, two.error) == (-9, "SIGKILL", "killed by SIGKILL")
        assert (three.exit_code, three.error, three.duration) == (0, None, 0.5)
        for a in attempts:
            assert (a.job_id, a.worker_id, a.host) == ("j", "w", "host-a")
            assert a.started_at is not None and a.finished_at is not None and a.started_at <= a.finished_at
            self.assert_near(a.finished_at, storage.now(), 5)
        self.complete(storage, "j", fourth.lease_token, self.ok())
        assert [a.attempt for a in storage.attempts("j")] == [1, 2, 3, 4]
        assert storage.attempts("missing") == []
        # A job's history goes with it.
        assert storage.delete(["j"], list(lifecycle.FINISHED_STATES)) is not None
        assert storage.attempts("j") == []

    def test_attempts_per_minute(self, storage: Any) -> None:
        from datetime import timedelta

        from queuectl_core.storage.capabilities import minute_of

        start = storage.now()
        storage.enqueue([self.new("ok"), self.new("dies", max_retries=0), self.new("again", max_retries=1)])
        for _ in range(4):  # whatever the claim order: ok completes, dies dies, again fails then completes
            job = storage.claim("w", 30)
            assert job is not None
            job_id = job.id
            if job_id == "ok" or (job_id == "again" and job.attempts == 2):
                self.complete(storage, job_id, job.lease_token, self.ok())
            elif job_id == "dies":
                self.bury(storage, job_id, job.lease_token, self.bad(exit_code=-9, error="killed by SIGKILL"))
            else:
                self.retry(storage, job_id, job.lease_token, self.bad(), 0)
        counts = storage.attempts_per_minute(start - timedelta(minutes=1))
        for minute in counts:  # each key the start of a minute, in UTC, between the start and now
            assert minute == minute_of(minute) and minute.utcoffset() == timedelta(0)
            assert minute_of(start) <= minute <= storage.now()
        ok, bad = sum(n for n, _ in counts.values()), sum(n for _, n in counts.values())
        # With history, every attempt; the fallback counts each job's last finished one.
        assert (ok, bad) == ((2, 2) if "AttemptsPerMinute" in getattr(storage, "native", ()) else (2, 1))
        assert storage.attempts_per_minute(storage.now() + timedelta(minutes=2)) == {}

    def test_a_released_or_lost_attempt_is_recorded_and_its_number_never_reused(self, storage: Any) -> None:
        import time

        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("j", max_retries=3)])
        first = storage.claim("w", 30)
        stopped = self.bad(exit_code=-15, error="stopped", aborted=True, duration=0.25, log_path="/l/j.1.log")
        released = storage.apply("j", first.lease_token, lifecycle.release(first, stopped))
        assert released.state == JobState.PENDING and released.attempts == 0
        second = storage.claim("w", 30)
        assert (second.attempts, second.attempt_number) == (1, 2)
        unstarted = storage.apply("j", second.lease_token, lifecycle.release(second))  # handed back before it ran
        assert unstarted.last_error == lifecycle.NOT_STARTED_REASON and unstarted.last_duration is None
        third = storage.claim("w", 0.05)
        assert third.attempt_number == 3
        time.sleep(0.2)
        [lost] = self.recover(storage)
        assert lost.state == JobState.FAILED and lost.last_duration is None and lost.last_exit_code is None
        if not self.history(storage):
            return
        one, two, three = storage.attempts("j")
        assert (one.attempt, one.exit_code, one.error, one.duration, one.log_path) == (
            1, -15, "stopped", 0.25, "/l/j.1.log")
        assert (two.attempt, two.error, two.duration) == (2, lifecycle.NOT_STARTED_REASON, None)
        assert (three.attempt, three.error, three.exit_code, three.duration) == (
            3, lifecycle.LEASE_EXPIRED_REASON, None, None)

    def test_history_is_recorded_through_the_batched_paths(self, storage: Any) -> None:
        from queuectl_core.jobs import lifecycle

        storage.enqueue([self.new("a"), self.new("b"), self.new("c")])
        a, b = storage.claim_many("w", 30, 2)
        applied, claimed = storage.apply_and_claim(
            [(a.id, a.lease_token, lifecycle.complete(self.ok())), (b.id, b.lease_token, lifecycle.complete(self.ok()))],
            "w", 30, 1)
        assert all(applied) and [j.id for j in claimed] == ["c"]
        storage.apply_batch([("c", claimed[0].lease_token, lifecycle.complete(self.ok()))])
        if not self.history(storage):
            assert [x.attempt for x in storage.attempts("a")] == [1]  # the row's last attempt
            return
        for job_id in "abc":
            assert [(x.attempt, x.exit_code) for x in storage.attempts(job_id)] == [(1, 0)]
        # A final write repeated after a lost reply records nothing twice.
        again = storage.apply("c", claimed[0].lease_token, lifecycle.complete(self.ok()))
        assert again is not None and len(storage.attempts("c")) == 1

    def test_purge_deletes_the_history_of_what_it_deletes(self, storage: Any) -> None:
        from queuectl_core.jobs.models import JobState

        storage.enqueue([self.new("old"), self.new("kept", max_retries=0)])
        for _ in range(2):
            job = storage.claim("w", 30)
            (self.complete if job.id == "old" else self.bury)(storage, job.id, job.lease_token,
                                                                self.ok() if job.id == "old" else self.bad())
        assert [x for x, _ in storage.purge([JobState.COMPLETED], -1)] == ["old"]
        assert storage.attempts("old") == []
        assert [x.attempt for x in storage.attempts("kept")] == [1]

    # -- accounting: what each attempt used, as its executor measured it ---------------------------
    def test_what_an_attempt_used_is_recorded_on_the_job_and_in_its_history(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.jobs import lifecycle

        big = 5 * 1024 ** 3  # beyond 32 bits: peaks are stored as 64-bit integers
        storage.enqueue([self.new("j", max_retries=2)])
        first = storage.claim("w", 30)
        self.retry(storage, "j", first.lease_token, self.bad(exit_code=-9, error="killed by SIGKILL", duration=2.0,
                                                             cpu_seconds=1.25, max_rss_bytes=big), 0)
        failed = storage.get("j")
        assert (failed.last_cpu_seconds, failed.last_max_rss_bytes) == (1.25, big)
        second = storage.claim("w", 30)
        # An executor that measures nothing (a third party's) leaves them None.
        done = self.complete(storage, "j", second.lease_token, self.ok(duration=0.5))
        assert (done.last_cpu_seconds, done.last_max_rss_bytes) == (None, None)
        restarted = actions.restart(storage, "j")  # what describes the last run is cleared
        assert (restarted.last_cpu_seconds, restarted.last_max_rss_bytes) == (None, None)
        third = storage.claim("w", 0.05)
        import time

        time.sleep(0.2)
        [lost] = storage.expired()
        recovered = storage.apply("j", third.lease_token, lifecycle.recover(lost))  # no result: nothing measured
        assert (recovered.last_cpu_seconds, recovered.last_max_rss_bytes) == (None, None)
        if not self.history(storage):
            return
        one, two, three = storage.attempts("j")
        assert (one.cpu_seconds, one.max_rss_bytes, one.signal) == (1.25, big, "SIGKILL")
        assert (two.cpu_seconds, two.max_rss_bytes) == (None, None)
        assert (three.cpu_seconds, three.max_rss_bytes, three.error) == (None, None, lifecycle.LEASE_EXPIRED_REASON)

    def test_finished_attempts_since_a_time_with_their_queue(self, storage: Any) -> None:
        from datetime import timedelta

        start = storage.now() - timedelta(seconds=self.SLACK)
        storage.enqueue([self.new("a", queue="fast"), self.new("b", queue="slow", max_retries=1)])
        for _ in range(3):
            job = storage.claim("w", 30)
            if job.id == "b" and job.attempts == 1:
                self.retry(storage, "b", job.lease_token, self.bad(duration=2.0, cpu_seconds=0.5), 0)
            else:
                self.complete(storage, job.id, job.lease_token, self.ok(duration=1.0, max_rss_bytes=2048))
        found = storage.finished_attempts(start)
        got = sorted((queue, a.job_id, a.attempt, a.duration, a.cpu_seconds, a.max_rss_bytes, a.exit_code)
                     for queue, a in found)
        if "FinishedAttempts" in getattr(storage, "native", ()):
            assert got == [("fast", "a", 1, 1.0, None, 2048, 0), ("slow", "b", 1, 2.0, 0.5, None, 1),
                           ("slow", "b", 2, 1.0, None, 2048, 0)]
        else:  # the fallback knows each job's last finished attempt only
            assert got == [("fast", "a", 1, 1.0, None, 2048, 0), ("slow", "b", 2, 1.0, None, 2048, 0)]
        times = [a.finished_at for _, a in found]
        assert times == sorted(times)
        assert storage.finished_attempts(storage.now() + timedelta(minutes=2)) == []

    # -- output: every attempt's output, kept by the storage (the AttemptOutput capability) --------
    def output(self, storage: Any) -> None:
        """Skip unless the storage keeps output itself (the capability has no fallback)."""
        if "AttemptOutput" not in getattr(storage, "native", ()):
            pytest.skip("this storage does not keep output (no AttemptOutput capability)")

    def test_output_chunks_are_stored_replaced_and_dropped_per_attempt(self, storage: Any) -> None:
        from queuectl_core.jobs.output import OutputWrite

        self.output(storage)
        storage.enqueue([self.new("j")])
        binary = b"\x00\xff\xfe not utf-8 \x00"
        storage.write_output([OutputWrite("j", 1, ((1, b"one\n"), (2, b"two\n"), (3, binary))),
                              OutputWrite("j", 2, ((1, b"second attempt\n"),))])
        assert storage.read_output("j", 1) == [(1, b"one\n"), (2, b"two\n"), (3, binary)]
        assert storage.read_output("j", 1, after=2) == [(3, binary)]
        assert storage.output_sizes("j") == {1: 8 + len(binary), 2: 15}
        # A drop deletes [first, end) of that attempt only, then the chunks are stored (replacing).
        storage.write_output([OutputWrite("j", 1, ((3, b"three\n"), (4, b"four\n")), drop=(1, 3))])
        assert storage.read_output("j", 1) == [(3, b"three\n"), (4, b"four\n")]
        assert storage.read_output("j", 2) == [(1, b"second attempt\n")]
        # A job that is gone (or never was) gets nothing, and the others of the batch still do.
        storage.write_output([OutputWrite("gone", 1, ((1, b"x"),)), OutputWrite("j", 3, ((1, b"z"),))])
        assert storage.read_output("gone", 1) == [] and storage.output_sizes("gone") == {}
        assert storage.read_output("j", 3) == [(1, b"z")]
        storage.write_output([])

    def test_output_keeps_the_start_and_the_end_with_a_line_saying_what_was_cut(self, storage: Any) -> None:
        from queuectl_core.jobs.output import OutputCap, joined

        self.output(storage)
        storage.enqueue([self.new("big")])
        cap = OutputCap("big", 1, limit=4096)
        printed = b"".join(b"line %05d\n" % n for n in range(2000))
        for at in range(0, len(printed), 700):  # written a piece at a time, as a worker does
            cap.add(printed[at:at + 700])
            write = cap.take()
            if write is not None:
                storage.write_output([write])
        out = joined(storage.read_output("big", 1))
        assert out.startswith(printed[:2048]) and out.endswith(printed[-2048:])
        assert f"[queuectl: {len(printed) - 4096:,} bytes cut]\n".encode() in out
        assert len(out) < 4096 + 40 and sum(storage.output_sizes("big").values()) == len(out)

    def test_an_attempts_last_output_is_stored_with_its_outcome(self, storage: Any) -> None:
        """A worker hands a finished attempt's last output to ``apply_and_claim`` (or
        ``apply_batch``) with its outcome: whoever sees the attempt ended sees all it printed."""
        from queuectl_core.jobs import lifecycle
        from queuectl_core.jobs.models import JobState
        from queuectl_core.jobs.output import OutputWrite

        self.output(storage)
        storage.enqueue([self.new("a"), self.new("b"), self.new("c")])
        a = storage.claim("w", 30)
        storage.write_output([OutputWrite("a", 1, ((1, b"early\n"),))])
        done, taken = storage.apply_and_claim([("a", a.lease_token, lifecycle.complete(self.ok()))], "w", 30, 1,
                                              output=[OutputWrite("a", 1, ((1, b"early\nlast\n"), (2, b"end\n")))])
        assert done[0].state == JobState.COMPLETED and [j.id for j in taken] == ["b"]
        assert storage.read_output("a", 1) == [(1, b"early\nlast\n"), (2, b"end\n")]
        b = taken[0]
        # Without a claim, and with a write for a job that is gone: the rest is still stored.
        done = storage.apply_batch([("b", b.lease_token, lifecycle.complete(self.ok()))],
                                   output=[OutputWrite("gone", 1, ((1, b"x"),)), OutputWrite("b", 1, ((1, b"bee\n"),))])
        assert done[0].state == JobState.COMPLETED
        assert storage.read_output("b", 1) == [(1, b"bee\n")] and storage.read_output("gone", 1) == []
        # A fenced-out outcome changes nothing, but what the attempt printed is kept all the same.
        c = storage.claim("w", 30)
        done = storage.apply_batch([("c", "stale", lifecycle.complete(self.ok()))],
                                   output=[OutputWrite("c", 1, ((1, b"printed\n"),))])
        assert done == [None] and storage.get("c").state == JobState.PROCESSING and c.id == "c"
        assert storage.read_output("c", 1) == [(1, b"printed\n")]

    def test_deleting_or_purging_a_job_deletes_its_output(self, storage: Any) -> None:
        from queuectl_core.control import actions
        from queuectl_core.jobs.models import JobState
        from queuectl_core.jobs.output import OutputWrite

        self.output(storage)
        storage.enqueue([self.new("a"), self.new("b"), self.new("c")])
        for _ in range(3):
            job = storage.claim("w", 30)
            storage.write_output([OutputWrite(job.id, 1, ((1, b"out of " + job.id.encode()),))])
            self.complete(storage, job.id, job.lease_token, self.ok())
        actions.remove(storage, ["a"], executor=None)
        assert storage.read_output("a", 1) == [] and storage.output_sizes("a") == {}
        assert sorted(x for x, _ in storage.purge([JobState.COMPLETED], -1)) == ["b", "c"]
        assert storage.get("b") is None and storage.read_output("b", 1) == [] and storage.read_output("c", 1) == []

    # -- limits: a job's own limits, and a queue's defaults (the QueueLimits capability) -----------
    def test_limits_are_kept_with_the_job_and_as_the_queues_defaults(self, storage: Any) -> None:
        from queuectl_core.jobs.limits import Limits

        storage.enqueue([self.new("own", memory=5 << 20, cpu_time=1.5), self.new("none"),
                         self.new("zero", memory=0, cpu_time=0.0)])
        assert (storage.get("own").memory, storage.get("own").cpu_time) == (5 << 20, 1.5)
        assert (storage.get("none").memory, storage.get("none").cpu_time) == (None, None)
        assert (storage.get("zero").memory, storage.get("zero").cpu_time) == (0, 0.0)  # 0: none, whatever the defaults
        if "QueueLimits" not in getattr(storage, "native", ()):
            assert storage.queue_limits() == {}  # core's fallback: no queue has defaults
            return
        assert storage.queue_limits() == {}
        storage.set_queue_limits("q", memory=100 << 20)
        storage.set_queue_limits("q", cpu_time=3.0)  # the memory default kept
        assert storage.queue_limits() == {"q": Limits(100 << 20, 3.0)}
        storage.set_queue_limits("q", memory=0)  # cleared; the CPU time kept
        assert storage.queue_limits() == {"q": Limits(None, 3.0)}
        storage.set_queue_limits("q", cpu_time=0)
        assert storage.queue_limits() == {}

    # -- notifications: the outbox (the Outbox capability; its fallback is one process's memory) ---------
    @staticmethod
    def entry(notifier: str, nid: str, event: str = "dead") -> Any:
        import json

        from queuectl_core.jobs.notifications import OutboxEntry

        return OutboxEntry(notifier, nid, event, json.dumps({"id": nid}))

    def test_outbox_keeps_one_row_per_notifier_and_id(self, storage: Any) -> None:
        e = [self.entry("hook", "n1"), self.entry("hook", "n2"), self.entry("cmd", "n1")]
        assert storage.outbox_add(e) == ["n1", "n2", "n1"]
        assert storage.outbox_add([self.entry("hook", "n1"), self.entry("hook", "n3")]) == ["n3"]
        got = storage.outbox_claim("w1", ["hook"], 30, 10)
        assert [(i.entry.notifier, i.entry.id, i.entry.body, i.tries) for i in got] == [
            ("hook", "n1", '{"id": "n1"}', 1), ("hook", "n2", '{"id": "n2"}', 1), ("hook", "n3", '{"id": "n3"}', 1)]
        assert abs((got[0].created_at - storage.now()).total_seconds()) < self.SLACK
        assert storage.outbox_claim("w2", ["hook"], 30, 10) == []  # leased
        assert [i.entry.notifier for i in storage.outbox_claim("w2", ["cmd", "other"], 30, 1)] == ["cmd"]
        # A settled row is still known: written again, it is not added (nor delivered) twice.
        assert storage.outbox_settle(got[0], "delivered", None) is True
        assert storage.outbox_add([self.entry("hook", "n1")]) == []

    def test_outbox_settle_is_fenced_retries_and_counts(self, storage: Any) -> None:
        import time

        storage.outbox_add([self.entry("hook", "a"), self.entry("hook", "b")])
        a, b = storage.outbox_claim("w1", ["hook"], 30, 2)
        assert storage.outbox_settle(a, "failed", 0.0, "answered 500") is True
        assert storage.outbox_settle(a, "failed", 0.0) is False  # its claim is spent
        assert storage.outbox_settle(b, "failed", 60.0, "refused") is True
        time.sleep(0.01)
        again = storage.outbox_claim("w2", ["hook"], 30, 10)
        assert [(i.entry.id, i.tries) for i in again] == [("a", 2)]  # b is due in a minute
        assert storage.outbox_settle(a, "delivered", None) is False  # the old token
        assert storage.outbox_settle(again[0], "delivered", None) is True
        assert storage.notification_counts() == {("hook", "failed"): 2, ("hook", "delivered"): 1}
        assert storage.outbox_claim("w2", ["hook"], 30, 10) == []

    def test_outbox_lease_expires_and_prune_deletes_settled_rows(self, storage: Any) -> None:
        import time

        storage.outbox_add([self.entry("hook", "a"), self.entry("hook", "b")])
        first = storage.outbox_claim("w1", ["hook"], 0.05, 1)
        assert [i.entry.id for i in first] == ["a"]
        time.sleep(0.1)  # w1 died mid-delivery: its lease ends, the row is due again
        later = storage.outbox_claim("w2", ["hook"], 30, 10)
        assert [(i.entry.id, i.tries) for i in later] == [("a", 2), ("b", 1)]
        assert storage.outbox_settle(first[0], "delivered", None) is False
        assert storage.outbox_settle(later[0], "expired", None) is True
        assert storage.outbox_prune(3600) == 0
        assert storage.outbox_prune(-self.SLACK) == 1  # settled rows only: b is still in delivery
        assert storage.outbox_add([self.entry("hook", "a")]) == ["a"]

    def test_outbox_concurrent_claimers_never_share_a_row(self, storage_factory: Any) -> None:
        first = self.connect(storage_factory)
        if "Outbox" not in first.native:
            pytest.skip("core's fallback outbox is one process's memory: nothing to share")
        total = 120
        first.outbox_add([self.entry("hook", f"n{i:03d}") for i in range(total)])
        claimers = [self.connect(storage_factory) for _ in range(4)]
        got: list[list[str]] = [[] for _ in claimers]
        errors: list[BaseException] = []
        start = threading.Barrier(len(claimers))

        def run(n: int) -> None:
            store = claimers[n]
            try:
                start.wait()
                while items := store.outbox_claim(f"w{n}", ["hook"], 30, 7):
                    for item in items:
                        got[n].append(item.entry.id)
                        assert store.outbox_settle(item, "delivered", None)
            except BaseException as exc:
                errors.append(exc)

        _in_threads(run, len(claimers), timeout=120)
        assert not errors, errors
        every = [i for ids in got for i in ids]
        assert len(every) == total and len(set(every)) == total
        assert first.notification_counts() == {("hook", "delivered"): total}

    # -- needs: what jobs need, what workers have, pools (the ResourceNeeds capability) ----------
    def needs(self, storage: Any) -> bool:
        """Whether the storage keeps needs (without it, core refuses jobs with needs)."""
        return "ResourceNeeds" in getattr(storage, "native", ())

    def test_a_job_is_claimed_only_by_a_worker_whose_free_resources_cover_its_needs(self, storage: Any) -> None:
        if not self.needs(storage):
            pytest.skip("the storage has no ResourceNeeds capability")
        for w in ("w1", "w2"):
            storage.register_worker(self._info(storage, w))
        storage.declare_resources("w1", {"gpu": "0,1"})
        storage.declare_resources("w2", {})
        storage.enqueue([self.new(f"g{i}", needs={"gpu": 1}, priority=5) for i in range(3)]
                        + [self.new("three", needs={"gpu": 3}, priority=9), self.new("plain")])
        assert storage.get("g0").needs == {"gpu": 1} and storage.get("plain").needs == {}
        assert storage.claim("w2", 30).id == "plain"  # w2 has no gpu: nothing else fits it
        assert storage.claim("w2", 30) is None
        g0, g1 = storage.claim("w1", 30), storage.claim("w1", 30)
        assert (g0.id, g1.id, g0.needs) == ("g0", "g1", {"gpu": 1})
        assert storage.claim("w1", 30) is None  # both gpus held; "three" never fits two
        self.complete(storage, "g0", g0.lease_token, self.ok())
        assert [j.id for j in storage.claim_many("w1", 30, 5)] == ["g2"]
        usage = storage.resource_usage()
        assert [(w.worker_id, w.declared, w.in_use) for w in usage.workers] == [("w1", {"gpu": "0,1"}, {"gpu": 2})]

    def test_needs_round_trip_through_a_stream_and_a_batch(self, storage: Any) -> None:
        if not self.needs(storage):
            pytest.skip("the storage has no ResourceNeeds capability")
        jobs = [self.new(f"s{i}", needs={"gpu": 1, "license": 2} if i % 2 else {}) for i in range(6)]
        got = [j for batch in storage.enqueue_stream([jobs[:3], jobs[3:]]) for j in batch]
        assert [j.needs for j in got] == [j.needs for j in jobs]
        assert [storage.get(j.id).needs for j in jobs] == [j.needs for j in jobs]

    def test_a_pool_caps_its_units_across_workers_until_removed(self, storage: Any) -> None:
        if not self.needs(storage):
            pytest.skip("the storage has no ResourceNeeds capability")
        storage.set_pool("license", 2)
        storage.enqueue([self.new("big", needs={"license": 2}, priority=9)]
                        + [self.new(f"l{i}", needs={"license": 1}) for i in range(3)])
        big = storage.claim("w1", 30)
        assert big.id == "big" and storage.claim("w2", 30) is None
        assert [(p.name, p.capacity, p.in_use) for p in storage.resource_usage().pools] == [("license", 2, 2)]
        self.complete(storage, "big", big.lease_token, self.ok())
        assert {storage.claim("w1", 30).id, storage.claim("w2", 30).id} == {"l0", "l1"}
        assert storage.claim("w3", 30) is None
        storage.set_pool("license", 3)
        assert storage.claim("w3", 30).id == "l2"
        assert storage.remove_pool("license") and not storage.remove_pool("license")
        assert storage.resource_usage().pools == ()

    def test_a_pool_unit_comes_back_when_a_dead_workers_job_is_taken_back(self, storage: Any) -> None:
        import time

        if not self.needs(storage):
            pytest.skip("the storage has no ResourceNeeds capability")
        storage.set_pool("license", 1)
        storage.enqueue([self.new("a", needs={"license": 1}), self.new("b", needs={"license": 1})])
        assert storage.claim("dead", 0.05).id == "a"
        assert storage.claim("w", 30) is None
        time.sleep(0.2)
        assert [j.id for j in self.recover(storage)] == ["a"]
        assert storage.resource_usage().pools[0].in_use == 0
        assert storage.claim("w", 30).id in ("a", "b")

    def test_never_servable_counts_needs_beyond_a_pools_capacity_or_what_the_worker_declared(self, storage: Any) -> None:
        if not self.needs(storage):
            pytest.skip("the storage has no ResourceNeeds capability")
        for w in ("w1", "w2"):
            storage.register_worker(self._info(storage, w))
        storage.declare_resources("w1", {"gpu": "0"})
        storage.declare_resources("w2", {})
        storage.set_pool("license", 2)
        storage.enqueue([self.new("plain", queue="mine"), self.new("gpu1", queue="mine", needs={"gpu": 1}),
                         self.new("gpu2", queue="mine", needs={"gpu": 2}),
                         self.new("lic3", queue="mine", needs={"license": 3}),
                         self.new("lic2", queue="mine", needs={"license": 2}, priority=9),
                         self.new("lic1", queue="mine", needs={"license": 1}),
                         self.new("held", queue="paused", needs={"gpu": 5}),
                         self.new("other", queue="other", needs={"gpu": 5})])
        storage.enqueue([self.new("child", queue="mine", needs={"gpu": 5}, after=("plain",))])
        storage.set_queue("paused", paused=True)
        assert storage.never_servable("w1", ["mine", "paused"]) == 2  # gpu2, lic3
        assert storage.never_servable("w2", ["mine", "paused"]) == 3  # and gpu1: w2 has no gpu
        assert storage.never_servable("w1", None) == 3  # and "other"; never a paused or waiting job
        assert storage.claim("w2", 30).id == "lic2"  # the pool is full now: lic1 waits, but not "never"
        assert storage.never_servable("w1", ["mine"]) == 2
        assert storage.burst_remaining(["mine"]) == (6, 1)  # lic2 running; plain, gpu1, gpu2, lic3, lic1
        assert storage.never_servable("nobody", ["none"]) == 0

    def test_a_pool_holds_under_racing_claimers(self, storage_factory: Any) -> None:
        first = self.connect(storage_factory)
        if not self.needs(first):
            pytest.skip("the storage has no ResourceNeeds capability")
        first.set_pool("license", 1)
        # Spread over queues, so no queue's limit (there is none) serialises the racers.
        first.enqueue([self.new(f"r{i:03d}", queue=f"q{i % 4}", needs={"license": 1}) for i in range(40)])
        # while one holds the pool's only unit, nobody else may be processing
        seen = self._processing_seen_by_racing_claimers(storage_factory)
        assert max(seen) == 1 and len(seen) == 40
