"""Jobs: enqueue (one batch, or a stream of them in one transaction), reads, the tallies, and
deleting finished jobs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from queuectl_core.storage.sql.base import Fenced, SQLBase
from queuectl_core.storage.sql.dialect import CHUNK, quoted
from queuectl_core.storage.sql.dialect import in_list as _in
from queuectl_core.storage.sql.dialect import named as _names
from queuectl_core.storage.sql.rows import COLS, codes_out, columns, control_values

if TYPE_CHECKING:
    from typing import Any, Iterable, Iterator, Sequence

    from queuectl_core.interfaces import Tx
    from queuectl_core.jobs.models import Job, JobState, NewJob


class JobsMixin(SQLBase):
    # -- jobs -----------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        from queuectl_core.errors import DuplicateJobError, UniqueKeyError

        if not jobs:
            return []
        ids = [j.id for j in jobs]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)

        def insert(tx: Tx) -> dict[str, Sequence[Any]]:
            self._before_insert(tx, jobs)
            rows = self._insert(tx, jobs)
            self._insert_needs(tx, jobs)
            if len(rows) != len(jobs):
                inserted = {r[0] for r in rows}
                raise DuplicateJobError(next(i for i in ids if i not in inserted))  # rolls the batch back
            by_id = {r[0]: r for r in rows}
            by_id.update(self._after_insert(tx, jobs))
            tx.wake()
            return by_id

        try:
            # The rows become Jobs after the commit and its wake-up: an idle worker's pick-up of
            # the job does not wait for them (W4).
            by_id = self._tx(insert)
        except UniqueKeyError as exc:
            if exc.holder is not None:
                raise
            # Lost a race to a concurrent enqueue: the constraint refused it; name the winner.
            keys = [j.unique_key for j in jobs if j.unique_key is not None]
            holders = self._holders(None, keys)
            key, holder = next(iter(holders.items()), (exc.key, None))
            raise UniqueKeyError(key, holder) from None
        return [self._job(by_id[i]) for i in ids]

    def enqueue_stream(self, batches: Iterable[Sequence[NewJob]]) -> Iterator[list[Job]]:
        """Insert every job of every batch in one transaction, all or none: an exception from
        ``batches`` (a bad line of a file) or from a batch (a duplicate id, a held unique key)
        rolls everything back. Ids must be unique across the batches (the caller checks; the
        primary key refuses it anyway). After the commit, the stored jobs come back batch by batch
        from a temporary spool file, so a million jobs never sit in memory at once."""
        import pickle
        import tempfile

        from queuectl_core.errors import DuplicateJobError, UniqueKeyError

        spool = tempfile.TemporaryFile(prefix="queuectl-enqueue-")
        last: list[Sequence[NewJob]] = []

        def insert(tx: Tx) -> int:
            total = 0
            queues: set[str] = set()
            for jobs in batches:
                if not jobs:
                    continue
                last[:] = [jobs]
                ids = [j.id for j in jobs]
                if len(set(ids)) != len(ids):
                    seen: set[str] = set()
                    for job_id in ids:
                        if job_id in seen:
                            raise DuplicateJobError(job_id)
                        seen.add(job_id)
                self._before_insert(tx, jobs, queues)
                rows = self._insert(tx, jobs)
                self._insert_needs(tx, jobs)
                if len(rows) != len(jobs):
                    inserted = {r[0] for r in rows}
                    raise DuplicateJobError(next(i for i in ids if i not in inserted))
                if any(j.after for j in jobs):
                    by_id = {r[0]: r for r in rows}
                    by_id.update(self._after_insert(tx, jobs))
                    rows = [by_id[i] for i in ids]
                pickle.dump(columns(rows), spool, protocol=pickle.HIGHEST_PROTOCOL)
                total += len(rows)
            if total:
                tx.wake()
            return total

        try:
            try:
                self._tx(insert)
            except UniqueKeyError as exc:
                if exc.holder is not None or not last:
                    raise
                # The last batch's keys (the refused one is among them), and the one the database
                # named, which may be an earlier batch's where storage defers the check (one COPY).
                keys = [j.unique_key for j in last[0] if j.unique_key is not None]
                if exc.key is not None and exc.key not in keys:
                    keys.insert(0, exc.key)
                holders = self._holders(None, keys)
                key, holder = next(iter(holders.items()), (exc.key, None))
                raise UniqueKeyError(key, holder) from None
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return self._unspool(spool)

    def _unspool(self, spool: Any) -> Iterator[list[Job]]:
        import pickle

        with spool:
            while True:
                try:
                    columns = pickle.load(spool)
                except EOFError:
                    return
                yield self._jobs_from_columns(columns)

    # -- queues and unique keys at enqueue ----------------------------------------------------
    def _holders(self, tx: Tx | None, keys: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            names = _names("k", chunk)
            sql = ("SELECT unique_key, id FROM {j} WHERE unique_key IN (" + _in(names) + ")"
                   " AND state IN ({holding})")
            rows = self._q(tx, sql, **names) if tx is not None else self._read(sql, **names)
            out.update({r[0]: r[1] for r in rows})
        return out

    def _before_insert(self, tx: Tx, jobs: Sequence[NewJob], queues: set[str] | None = None) -> None:
        """Queues named for the first time get a row; a unique key already held is refused,
        naming its holder (the partial unique index is what guarantees it under races).
        ``queues``: names this transaction has already made sure of (added to), so a stream of
        batches runs no statement here for them (PostgreSQL keeps one COPY open across them)."""
        from queuectl_core.errors import UniqueKeyError

        for name in sorted({j.queue for j in jobs}):
            if queues is not None:
                if name in queues:
                    continue
                queues.add(name)
            self._q(tx, "INSERT INTO {qt} (name, concurrency, paused) VALUES (:name, 0, FALSE)"
                    " ON CONFLICT (name) DO NOTHING RETURNING name", name=name)
        keys = [j.unique_key for j in jobs if j.unique_key is not None]
        if keys:
            holders = self._holders(tx, keys)
            if holders:
                key = next(k for k in keys if k in holders)
                raise UniqueKeyError(key, holders[key])

    def _insert(self, tx: Tx, jobs: Sequence[NewJob]) -> list[Sequence[Any]]:
        """Insert the batch, skipping ids that exist; the rows inserted (every column). A backend
        may override this with a one-round-trip form."""
        out: list[Sequence[Any]] = []
        for j in jobs:
            out += self._q(
                tx, "INSERT INTO {j} (id, command, state, attempts, max_retries, priority, created_at, updated_at,"
                " run_at, timeout, cancel_requested, queue, unique_key, retry_on, no_retry_on, cwd, env, tags)"
                " VALUES (:id, :command, 'pending', 0, :max_retries, :priority,"
                " {now}, {now}, COALESCE(:run_at, " + self.dialect.after("delay") + "), :timeout, FALSE,"
                " :queue, :unique_key, :retry_on, :no_retry_on, :cwd, :env, :tags)"
                " ON CONFLICT (id) DO NOTHING RETURNING " + COLS,
                id=j.id, command=j.command, max_retries=j.max_retries, priority=j.priority,
                run_at=self.dialect.to_db(j.run_at) if j.run_at is not None else None,
                delay=float(j.delay or 0), timeout=float(j.timeout) if j.timeout is not None else None,
                queue=j.queue, unique_key=j.unique_key, retry_on=codes_out(j.retry_on),
                no_retry_on=codes_out(j.no_retry_on), **control_values(j))
        return out

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT " + COLS + " FROM {j} WHERE id = :id", id=job_id)
        return self._job(rows[0]) if rows else None

    # Whether this database orders the characters of ids byte by byte (SQLite always; PostgreSQL
    # when the database's collation is C or C.UTF-8). Only then is a prefix an index range.
    # (``{{`` is ``{`` once the statement's names are filled in.)
    _BYTEWISE = ("SELECT CASE WHEN '+' < '-' AND '-' < '.' AND '.' < '0' AND '9' < ':' AND ':' < '@'"
                 " AND '@' < 'A' AND 'Z' < '[' AND 'B' < 'a' AND 'z' < '{{' AND 'a-' < 'a.'"
                 " AND 'a9' < 'a:' AND 'aZ' < 'a[' AND 'az' < 'a{{' AND 'a' < 'a0' THEN 1 ELSE 0 END")

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids starting with ``prefix``, sorted, an id equal to it first: a range
        of the primary key (``id >= prefix AND id < prefix with its last character + 1``) where the
        collation is bytewise; elsewhere (a PostgreSQL database in en_US.UTF-8, which orders
        ``B`` after ``a`` and skips punctuation) that range would miss ids, so every id is
        compared instead: right, and slower on a large table."""
        bytewise = self.__dict__.get("_bytewise_ids")
        if bytewise is None:
            bytewise = self.__dict__["_bytewise_ids"] = bool(self._read(self._BYTEWISE)[0][0])
        if not prefix:
            rows = self._read("SELECT id FROM {j} ORDER BY id LIMIT :limit", limit=limit)
            return sorted(r[0] for r in rows)
        params = {"p": prefix, "n": len(prefix), "limit": limit}
        if bytewise and ord(prefix[-1]) < 0x10FFFF:
            params["p_next"] = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            rows = self._read("SELECT id FROM {j} WHERE id >= :p AND id < :p_next AND substr(id, 1, :n) = :p"
                              " ORDER BY id LIMIT :limit", **params)
        else:
            rows = self._read("SELECT id FROM {j} WHERE substr(id, 1, :n) = :p"
                              " ORDER BY CASE WHEN id = :p THEN 0 ELSE 1 END LIMIT :limit", **params)
        return sorted(r[0] for r in rows)

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  states: Sequence[JobState] | None = None, tag: str | None = None,
                  queue: str | None = None, before: str | None = None) -> list[Job]:
        """Newest first (created_at, then id, both descending), as `list` shows them; optionally only
        some states, one tag, one queue. ``before`` (a job id) starts after that job: keyset paging
        that walks the index, however deep."""
        where, params = self._filter(state, states, tag, queue)
        if before is not None:
            where += (" AND " if where else " WHERE ") + \
                "(created_at, id) < (SELECT created_at, id FROM {j} WHERE id = :before)"
            params["before"] = before
        sql = "SELECT " + COLS + " FROM {j}" + where
        sql += " ORDER BY created_at DESC, id DESC" + (" LIMIT :limit" if limit is not None else "")
        return [self._job(r) for r in self._read(sql, limit=limit, **params)]

    def count_jobs(self, state: JobState | None = None, *, states: Sequence[JobState] | None = None,
                   tag: str | None = None, queue: str | None = None) -> int:
        """How many jobs :meth:`list_jobs` would list without a limit: from the tallies (constant
        time) unless a tag is asked for, which only the jobs themselves can answer."""
        if tag is None:
            wanted = {str(s) for s in ([state] if state is not None else []) + list(states or ())}
            return sum(n for q, s, _, n, _ in self._tallies()
                       if (not wanted or s in wanted) and (queue is None or q == queue))
        where, params = self._filter(state, states, tag, queue)
        return int(self._read("SELECT count(*) FROM {j}" + where, **params)[0][0])

    def _tallies(self) -> list[tuple[str, str, bool, int, int]]:
        """(queue, state, held by --after, jobs, their attempts), from the table the backend keeps
        exact on every write to the jobs (triggers; SQLite tallies its inserts in ``_insert``). A
        backend may keep several rows per key
        (PostgreSQL appends deltas, so concurrent workers never wait on one counter row): they are
        summed here."""
        rows = self._read("SELECT queue, state, held, sum(jobs), sum(attempts) FROM {jc} GROUP BY queue, state, held")
        return [(r[0], r[1], bool(r[2]), int(r[3]), int(r[4])) for r in rows if r[3] or r[4]]

    @staticmethod
    def _filter(state: JobState | None, states: Sequence[JobState] | None, tag: str | None,
                queue: str | None = None) -> tuple[str, dict[str, Any]]:
        wanted = [str(s) for s in ([state] if state is not None else []) + list(states or ())]
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if wanted:
            clauses.append("state IN (" + ", ".join(f":s{i}" for i in range(len(wanted))) + ")")
            params.update({f"s{i}": s for i, s in enumerate(wanted)})
        if tag is not None:
            # Tags are stored ",a,b," (tag names exclude commas); LIKE's wildcards are escaped.
            clauses.append("tags LIKE :tag ESCAPE '!'")
            params["tag"] = "%," + re.sub(r"([!%_])", r"!\1", tag) + ",%"
        if queue is not None:
            clauses.append("queue = :queue")
            params["queue"] = queue
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def pending_summary(self) -> tuple[int, int, datetime | None]:
        """Pending jobs split into (ready now, scheduled later), and the earliest run_at among
        runnable jobs that are due (pending or failed): how long the oldest ready job has waited.

        Ready is the tallied pending jobs (not held by --after) less the scheduled ones, which are
        counted off the due index per queue: the cost grows with the jobs scheduled for later,
        never with the ready or finished ones. The oldest is each queue's first due-index entry."""
        due = self.dialect.due_index
        per_queue = ("SELECT (SELECT count(*) FROM {j} " + due + " WHERE queue = q.name AND state IN ({runnable})"
                     " AND waiting = 0 AND run_at > {now} AND state = 'pending') AS later,"
                     " (SELECT min(run_at) FROM {j} " + due + " WHERE queue = q.name AND state IN ({runnable})"
                     " AND waiting = 0) AS first FROM {qt} q")
        # One statement, one snapshot: the tally and the scheduled count agree.
        rows = self._read("SELECT (SELECT sum(jobs) FROM {jc} WHERE state = 'pending' AND NOT held), sum(later),"
                          " min(CASE WHEN first <= {now} THEN first END) FROM (" + per_queue + ") x")
        free, scheduled, oldest = (int(rows[0][0] or 0), int(rows[0][1] or 0), rows[0][2]) if rows else (0, 0, None)
        return max(0, free - scheduled), scheduled, self.dialect.from_db(oldest) if oldest is not None else None

    def delete(self, job_ids: Sequence[str], states: Sequence[JobState]) -> list[Job] | None:
        """Delete every listed job, only if each exists and is in one of ``states``; otherwise
        delete nothing and return None. The deleted jobs (for their logs) on success."""
        if not job_ids:
            return []
        ids = list(dict.fromkeys(job_ids))
        sql = ("DELETE FROM {j} WHERE id IN (" + ", ".join(f":i{n}" for n in range(len(ids))) + ") AND state IN ("
               + quoted(states) + ") RETURNING " + COLS)

        def run(tx: Tx) -> list[Sequence[Any]]:
            rows = self._q(tx, sql, **{f"i{n}": i for n, i in enumerate(ids)})
            if len(rows) != len(ids):
                raise Fenced
            return rows

        try:
            rows = self._tx(run)
        except Fenced:
            return None
        return [self._job(r) for r in rows]

    def purge(self, states: Sequence[JobState], older_than: float,
              limit: int | None = None) -> list[tuple[str, str | None]]:
        """Delete jobs in ``states`` last changed more than ``older_than`` seconds ago (storage
        clock), at most ``limit`` of them (oldest first) when given; (id, log_path) of each, for
        their log files (not whole rows: a purge may delete thousands, each with its output)."""
        if not states:
            return []
        sql = ("DELETE FROM {j} WHERE id IN (SELECT id FROM {j} WHERE state IN ("
               + quoted(states) + ") AND updated_at < " + self.dialect.after("age")
               + " ORDER BY updated_at" + (" LIMIT :limit" if limit is not None else "") + ") RETURNING id, log_path")
        rows = self._tx(lambda tx: self._q(tx, sql, age=-float(older_than), limit=limit))
        return [(r[0], r[1]) for r in rows]

    def attempts_by_state(self) -> dict[JobState, int]:
        """The attempts recorded on the jobs of each state (every state present): what a metrics
        exporter derives attempt outcomes from without reading every job."""
        from queuectl_core.jobs.models import JobState

        totals = {s: 0 for s in JobState}
        for _, state, _, _, attempts in self._tallies():
            totals[JobState(state)] += attempts
        return totals

    def counts(self) -> dict[JobState, int]:
        from queuectl_core.jobs.models import JobState

        counts = {s: 0 for s in JobState}
        for _, state, _, n, _ in self._tallies():
            counts[JobState(state)] += n
        return counts

    def expired(self, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease has expired by the storage clock, oldest expiry first."""
        rows = self._read("SELECT " + COLS + " FROM {j} WHERE state = 'processing' AND lease_expires_at < {now}"
                          " ORDER BY lease_expires_at LIMIT :limit", limit=limit)
        return [self._job(r) for r in rows]
