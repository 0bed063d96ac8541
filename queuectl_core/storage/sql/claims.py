"""Claims and changes: taking runnable jobs under a lease, and persisting the lifecycle's decided
changes, fenced in each statement's WHERE clause. The claim statement is the one place that knows
about queues, priorities, limits and schedules."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import Fenced
from queuectl_core.storage.sql.dialect import CHUNK, quoted
from queuectl_core.storage.sql.dialect import in_list as _in
from queuectl_core.storage.sql.dialect import named as _names
from queuectl_core.storage.sql.output import OutputMixin
from queuectl_core.storage.sql.resources import PoolFull, claim_pick
from queuectl_core.storage.sql.rows import COLS, QUEUE_COL

if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.lifecycle import Change
    from queuectl_core.jobs.models import Job
    from queuectl_core.jobs.output import OutputWrite


class _QueueFull(Exception):
    """A limited queue filled up under a racing claim: roll back, try the other queues."""

    def __init__(self, queue: str) -> None:
        self.queue = queue


def _heartbeat_only(change: Change) -> Change:
    """The lease renewal alone, nothing else set: what the grouped heartbeat statement writes."""
    from queuectl_core.jobs.lifecycle import heartbeat

    return heartbeat(change.lease_seconds or 0.0)


class ClaimsMixin(OutputMixin):
    def claim(self, worker_id: str, lease_seconds: float, queues: Sequence[str] | None = None) -> Job | None:
        """The next runnable job (highest priority, earliest run_at, then id) of an unpaused queue
        below its concurrency limit (of ``queues`` only, when given), taken in one statement:
        processing, attempts + 1, a fresh token, lease = clock + lease_seconds."""
        return self._claim(worker_id, os.urandom(8).hex(), lease_seconds, queues)

    def _open_queues(self, queues: Sequence[str] | None, skip: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
        """The condition on queue row ``q`` of a queue a worker may claim from now: served, not
        paused, and (when limited) fewer of its jobs processing than its concurrency."""
        params: dict[str, Any] = {}
        cond = ("NOT q.paused AND (q.concurrency = 0 OR q.concurrency >"
                " (SELECT count(*) FROM {j} r WHERE r.queue = q.name AND r.state = 'processing'))")
        if queues is not None:
            names = _names("qn", list(queues))
            params.update(names)
            cond += " AND q.name IN (" + (_in(names) or "NULL") + ")"
        if skip:
            names = _names("qs", list(skip))
            params.update(names)
            cond += " AND q.name NOT IN (" + _in(names) + ")"
        return cond, params

    def claim_statement(self, queues: Sequence[str] | None = None, skip: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
        """The claim's one statement and its parameters (queues, :host; besides :worker, :token,
        :lease and :now): what :meth:`claim` runs, and what docs/architecture.md shows the plans of."""
        d = self.dialect
        ready = ("state IN ({runnable}) AND waiting = 0 AND run_at <= {now}")
        cond, params = self._open_queues(queues, skip)
        params["host"] = self.hostname or None  # -- history: where the claiming worker runs
        # The walk is per queue: each queue's best job comes off the ready index (queue,
        # priority DESC, run_at, id; runnable rows with nothing to wait for only), so paused
        # queues, other workers' queues and waiting children cost nothing.
        # -- needs: and each fitting need class's best job (storage/sql/resources.py) --
        params["whost"] = self.hostname
        pick = claim_pick(d, ready, cond)
        # The CTE picks one row (LIMIT 1, MATERIALIZED where supported) and the UPDATE touches
        # only it. SKIP LOCKED lets concurrent claimers take different rows without waiting.
        sql = ("WITH next AS " + d.materialized + " (" + pick + ")"
               " UPDATE {j} SET state = 'processing', attempts = attempts + 1, worker_id = :worker,"
               # -- history: the attempt's number (never reused) and host; log_path and
               # output_tail describe the running attempt from now on --
               " last_attempt = last_attempt + 1, host = :host, log_path = NULL, output_tail = NULL,"
               " lease_token = :token, lease_expires_at = " + d.after("lease") + ", updated_at = {now},"
               " cancel_requested = FALSE WHERE id = (SELECT id FROM next) RETURNING " + COLS)
        return sql, params

    def claim_many(self, worker_id: str, lease_seconds: float, limit: int,
                   queues: Sequence[str] | None = None) -> list[Job]:
        """Up to ``limit`` jobs, each as :meth:`claim` takes one (its own token and lease), in one
        transaction: a worker with ``limit`` free slots fills them in one round trip of locking."""
        if limit <= 1:
            job = self.claim(worker_id, lease_seconds, queues)
            return [job] if job is not None else []
        return self._claim_many(worker_id, [os.urandom(8).hex() for _ in range(limit)], lease_seconds, queues)

    def _claim(self, worker_id: str, token: str, lease_seconds: float,
               queues: Sequence[str] | None = None) -> Job | None:
        jobs = self._claim_many(worker_id, [token], lease_seconds, queues)
        return jobs[0] if jobs else None

    def _claim_many(self, worker_id: str, tokens: Sequence[str], lease_seconds: float,
                    queues: Sequence[str] | None = None) -> list[Job]:
        """The claim statement once per token, in one transaction, until one finds nothing. Each
        run sees the rows the earlier ones took (its own transaction's writes), so priorities and
        queue limits hold exactly as for as many separate claims."""
        skip: list[str] = []
        # A limited queue that races to full is skipped and the claim tried again: at most once
        # per queue, so this ends.
        while True:
            run = self._claim_runner(worker_id, tokens, lease_seconds, queues, skip)
            try:
                rows = self._tx(lambda tx: run(tx)())
            except _QueueFull as full:
                skip.append(full.queue)
                continue
            return [self._job(r) for r in rows]

    def _claim_runner(self, worker_id: str, tokens: Sequence[str], lease_seconds: float,
                      queues: Sequence[str] | None, skip: Sequence[str]
                      ) -> Callable[[Tx], Callable[[], list[Sequence[Any]]]]:
        """The claims of :meth:`_claim_many` within a transaction: the first claim is sent at once
        (``Tx.later``), and what this returns reads it, runs the rest and checks queue limits.
        The finisher raises _QueueFull to retry."""
        d = self.dialect
        sql, params = self.claim_statement(queues, skip)
        # Concurrent transactions (PostgreSQL): the count in the claim statement saw a snapshot.
        # Under the claimed job's queue row lock, held to commit, the count is exact: racing
        # claimers of one limited queue are serialised there, never over it. The lock (and the
        # limit) comes with the claim itself where the database allows it, one round trip less.
        limit_sql = "SELECT concurrency FROM {qt} WHERE name = :name AND concurrency > 0" + d.for_update
        if d.for_update and d.writable_cte:
            sql = "WITH c AS (" + sql + ") SELECT c.*, (" + limit_sql.replace(":name", "c.queue") + ") FROM c"
        args = dict(worker=worker_id, lease=float(lease_seconds), **params)

        def run(tx: Tx) -> Callable[[], list[Sequence[Any]]]:
            first = self._q_later(tx, sql, token=tokens[0], **args) if tokens else (lambda: [])

            def finish() -> list[Sequence[Any]]:
                out: list[Sequence[Any]] = []
                for n, token in enumerate(tokens):
                    rows = first() if n == 0 else self._q(tx, sql, token=token, **args)
                    if not rows:
                        break
                    row = rows[0]
                    if d.for_update:
                        queue = row[QUEUE_COL]
                        if d.writable_cte:
                            limit, row = row[-1], row[:-1]
                        else:
                            found = self._q(tx, limit_sql, name=queue)
                            limit = found[0][0] if found else None
                        if limit:
                            running = self._q(tx, "SELECT count(*) FROM {j} WHERE queue = :name AND state = 'processing'",
                                              name=queue)[0][0]
                            if running > limit:
                                raise _QueueFull(queue)
                        try:  # -- needs: a pool's limit, as a queue's
                            self._check_pools(tx, row)
                        except PoolFull:
                            raise _QueueFull(queue) from None
                    out.append(row)
                return out

            return finish

        return run

    def apply(self, job_id: str, token: str | None, change: Change) -> Job | None:
        """Persist a decided change, atomically and fenced: only while the job is in one of
        ``change.from_states``, holds ``token`` (when given) and, for ``expired_only``, its lease
        has expired. Returns the updated job, or None when fenced out (nothing changed)."""
        run = self._applier(job_id, token, change)
        rows = self._tx(lambda tx: run(tx)())
        return self._job(rows[0]) if rows else None

    def apply_many(self, changes: Sequence[tuple[str, str | None, Change]]) -> list[Job] | None:
        """Apply several (job id, token, change) in one transaction: all of them, or (when any
        one is fenced out) none, returning None. For commands acting on many jobs at once."""
        runs = [self._applier(job_id, token, change) for job_id, token, change in changes]

        def run_all(tx: Tx) -> list[Sequence[Any]]:
            out: list[Sequence[Any]] = []
            for run in runs:
                rows = run(tx)()
                if not rows:
                    raise Fenced
                out.append(rows[0])
            return out

        try:
            rows = self._tx(run_all)
        except Fenced:
            return None
        return [self._job(r) for r in rows]

    def apply_batch(self, changes: Sequence[tuple[str, str | None, Change]],
                    output: Sequence[OutputWrite] = ()) -> list[Job | None]:
        """Apply several ``(job id, token, change)`` in one transaction, each fenced on its own as
        :meth:`apply` is: the updated job, or None for one fenced out (the others still apply). A
        worker's finished attempts and heartbeats go this way, with the attempts' last output
        (``output``, stored first, as :meth:`write_output` stores it). Heartbeats without output to
        store are one statement for all of them."""
        if not changes:
            self.write_output(output)
            return []
        run = self._batch_runner(changes)
        write = self._output_runner(output)

        def both(tx: Tx) -> list[Sequence[Any] | None]:
            if write is not None:
                write(tx)
            return run(tx)()

        return [self._job(r) if r is not None else None for r in self._tx(both)]

    def _batch_runner(self, changes: Sequence[tuple[str, str | None, Change]]
                      ) -> Callable[[Tx], Callable[[], list[Sequence[Any] | None]]]:
        """What :meth:`apply_batch` runs in its transaction (and :meth:`apply_and_claim` in its own):
        the statements are sent, and what it returns reads their rows. On a pipelining backend
        every change is sent before any is read; otherwise each is read (and its dependants
        handled) before the next is sent."""
        from queuectl_core.jobs.lifecycle import Transition

        plain: dict[float, list[int]] = {}  # lease -> indexes of heartbeats with nothing but the lease
        runs: list[tuple[int, Callable[[Tx], Callable[[], list[Sequence[Any]]]]]] = []
        for n, (job_id, token, change) in enumerate(changes):
            if (change.transition == Transition.HEARTBEAT and change.progress is None and token is not None
                    and change.lease_seconds is not None and change == _heartbeat_only(change)):
                plain.setdefault(change.lease_seconds, []).append(n)
            else:
                runs.append((n, self._applier(job_id, token, change)))

        def run_all(tx: Tx) -> Callable[[], list[Sequence[Any] | None]]:
            out: list[Sequence[Any] | None] = [None] * len(changes)
            for lease, indexes in plain.items():
                for start in range(0, len(indexes), CHUNK // 2):
                    chunk = indexes[start:start + CHUNK // 2]
                    params: dict[str, Any] = {"lease": float(lease)}
                    pairs = []
                    for k, n in enumerate(chunk):
                        params[f"i{k}"], params[f"t{k}"] = changes[n][0], changes[n][1]
                        pairs.append(f"(id = :i{k} AND lease_token = :t{k})")
                    rows = self._q(tx, "UPDATE {j} SET lease_expires_at = " + self.dialect.after("lease") +
                                   " WHERE state = 'processing' AND (" + " OR ".join(pairs) + ") RETURNING " + COLS,
                                   **params)
                    by_id = {r[0]: r for r in rows}
                    for n in chunk:
                        out[n] = by_id.get(changes[n][0])
            unread: list[tuple[int, Callable[[], list[Sequence[Any]]]]] = []

            def finish() -> list[Sequence[Any] | None]:
                for n, read in unread:
                    rows = read()
                    out[n] = rows[0] if rows else None
                unread.clear()
                return out

            for n, run in runs:
                unread.append((n, run(tx)))
                if not tx.pipelined:
                    finish()
            return finish

        return run_all

    def apply_and_claim(self, changes: Sequence[tuple[str, str | None, Change]], worker_id: str,
                        lease_seconds: float, limit: int, queues: Sequence[str] | None = None,
                        output: Sequence[OutputWrite] = ()) -> tuple[list[Job | None], list[Job]]:
        """:meth:`apply_batch` of ``changes`` (and ``output``) then :meth:`claim_many` of ``limit``,
        in one transaction: a worker records the jobs that just finished and takes their successors
        at one lock (one commit) rather than two."""
        return self._apply_and_claim(changes, worker_id, [os.urandom(8).hex() for _ in range(limit)],
                                     lease_seconds, queues, output)

    def _apply_and_claim(self, changes: Sequence[tuple[str, str | None, Change]], worker_id: str,
                         tokens: Sequence[str], lease_seconds: float, queues: Sequence[str] | None,
                         output: Sequence[OutputWrite] = ()) -> tuple[list[Job | None], list[Job]]:
        apply = self._batch_runner(changes)
        write = self._output_runner(output)
        skip: list[str] = []
        while True:
            claim = self._claim_runner(worker_id, tokens, lease_seconds, queues, skip)

            def run(tx: Tx) -> tuple[list[Sequence[Any] | None], list[Sequence[Any]]]:
                # Pipelined (PostgreSQL), the changes and the first claim go in one round trip
                # and the commit in a second; otherwise the changes are done before the claim.
                if write is not None:
                    write(tx)
                read_applied = apply(tx)
                applied = None if tx.pipelined else read_applied()
                read_claimed = claim(tx)
                return (read_applied() if applied is None else applied), read_claimed()

            try:
                applied, claimed = self._tx(run, pipelined=True)
            except _QueueFull as full:
                skip.append(full.queue)
                continue
            return ([self._job(r) if r is not None else None for r in applied], [self._job(r) for r in claimed])

    def cancel_requests(self, job_ids: Sequence[str]) -> list[tuple[str, str | None]]:
        """(id, lease_token) of those of ``job_ids`` that are processing with a cancel requested:
        a worker with many jobs running checks them all in one read."""
        out: list[tuple[str, str | None]] = []
        ids = list(job_ids)
        for start in range(0, len(ids), CHUNK):
            names = _names("c", ids[start:start + CHUNK])
            out += [(r[0], r[1]) for r in self._read(
                "SELECT id, lease_token FROM {j} WHERE id IN (" + _in(names) + ") AND state = 'processing'"
                " AND cancel_requested", **names)]
        return out

    def _change_sql(self, change: Change, where: str, token: str | None = None) -> tuple[str, dict[str, Any]]:
        """The UPDATE that persists ``change`` on the rows ``where`` selects, fenced on its
        ``from_states`` (and ``token``, and ``expired_only``), returning every column."""
        d = self.dialect
        sets: list[str] = []
        p: dict[str, Any] = {"token": token}
        if change.state is not None:
            sets += ["state = :state", "updated_at = {now}"]
            p["state"] = str(change.state)
        if change.attempts is not None:
            sets.append("attempts = :attempts")
            p["attempts"] = change.attempts
        if change.run_in is not None:
            sets.append("run_at = " + d.after("run_in"))
            p["run_in"] = float(change.run_in)
        if change.lease_seconds is not None:
            sets.append("lease_expires_at = " + d.after("lease"))
            p["lease"] = float(change.lease_seconds)
        elif change.clear_lease:
            sets.append("lease_expires_at = NULL")
        if change.clear_token:
            sets += ["lease_token = NULL", "worker_id = NULL"]
        if change.clear_result:
            sets += ["last_exit_code = NULL", "last_error = NULL", "last_duration = NULL", "log_path = NULL",
                     "output_tail = NULL", "last_cpu_seconds = NULL", "last_max_rss_bytes = NULL"]
        if change.result is not None:
            r = change.result
            sets += ["last_exit_code = :exit_code", "last_error = :error", "log_path = :log_path",
                     "output_tail = :output_tail", "last_duration = :duration", "last_cpu_seconds = :cpu",
                     "last_max_rss_bytes = :rss"]
            p.update(exit_code=r.exit_code, error=change.reason if change.reason is not None else r.error,
                     log_path=r.log_path, output_tail=r.output_tail, duration=float(r.duration),
                     cpu=float(r.cpu_seconds) if r.cpu_seconds is not None else None, rss=r.max_rss_bytes)
        elif change.reason is not None:
            sets += ["last_exit_code = NULL", "last_error = :error", "last_duration = NULL",
                     "last_cpu_seconds = NULL", "last_max_rss_bytes = NULL"]
            p["error"] = change.reason
        if change.progress is not None and change.result is None:
            sets += ["log_path = :log_path", "output_tail = :output_tail"]
            p.update(log_path=change.progress[0], output_tail=change.progress[1])
        if change.cancel_requested is not None:
            sets.append("cancel_requested = " + (d.true if change.cancel_requested else "FALSE"))
        if change.command is not None:
            sets.append("command = :command")
            p["command"] = change.command
        where += " AND state IN (" + quoted(change.from_states) + ")"
        if token is not None:
            where += " AND lease_token = :token"
        if change.expired_only:
            where += " AND lease_expires_at < {now}"
        return "UPDATE {j} SET " + ", ".join(sets) + " WHERE " + where + " RETURNING " + COLS, p

    def _applier(self, job_id: str, token: str | None, change: Change
                 ) -> Callable[[Tx], Callable[[], list[Sequence[Any]]]]:
        """The statement persisting ``change`` (sent when the returned function is called with the
        transaction) and, from what that returns, the reading of its row and what the change does
        to the job's dependants."""
        from queuectl_core.jobs import lifecycle

        sql, p = self._change_sql(change, "id = :id", token)
        p["id"] = job_id
        # What the jobs waiting on this one (`after`) make of it, decided by the lifecycle.
        dependants = lifecycle.dependants_of(job_id, change)
        # A completed job releases the jobs waiting on it. Where the database allows it, in the
        # same statement: one round trip a completion, not two.
        released_in_sql = dependants is not None and dependants.parent_met and self.dialect.writable_cte
        if released_in_sql:
            sql = ("WITH upd AS (" + sql + "), rel AS (UPDATE {dp} SET done = TRUE WHERE parent IN"
                   " (SELECT id FROM upd) AND NOT done RETURNING child), kids AS (UPDATE {j} SET waiting ="
                   " waiting - 1 WHERE id IN (SELECT child FROM rel) AND waiting > 0 RETURNING id)"
                   " SELECT upd.*, (SELECT count(*) FROM kids) FROM upd")

        runnable = change.state in lifecycle.RUNNABLE_STATES

        def run(tx: Tx) -> Callable[[], list[Sequence[Any]]]:
            read = self._q_later(tx, sql, **p)

            def finish() -> list[Sequence[Any]]:
                rows = read()
                if rows:
                    if runnable:
                        tx.wake()
                    if released_in_sql:
                        released, rows = rows[0][-1], [rows[0][:-1]]
                        if released:
                            tx.wake()
                    elif dependants is not None and self._dependants(tx, job_id, dependants) and dependants.parent_met:
                        tx.wake()
                elif token is not None and change.idempotent:
                    # The same write repeated after its reply was lost: the row already says so.
                    rows = self._q(tx, "SELECT " + COLS + " FROM {j} WHERE id = :id AND lease_token = :token"
                                   " AND state = :state AND lease_expires_at IS NULL", **p)
                return rows

            return finish

        return run

    def next_run_at(self, queues: Sequence[str] | None = None) -> datetime | None:
        """The earliest run_at of a job a worker of ``queues`` could claim (paused and full
        queues, and jobs still waiting on others, have none): an idle worker's timer."""
        cond, params = self._open_queues(queues)
        rows = self._read("SELECT min(m) FROM (SELECT (SELECT min(run_at) FROM {j} " + self.dialect.due_index +
                          " WHERE queue = q.name AND state IN ({runnable}) AND waiting = 0) AS m"
                          " FROM {qt} q WHERE " + cond + ") x", **params)
        return self.dialect.from_db(rows[0][0]) if rows and rows[0][0] is not None else None
