"""``enqueue --file`` and ``enqueue --each``: stream a file of jobs (or one job per line of stdin)
into the queue in one transaction, in bounded memory.

JSON Lines are read, parsed and validated a line at a time and handed to storage in batches
(:meth:`Storage.enqueue_stream`), inside one transaction: a bad line anywhere, even the
millionth, rolls everything back and is reported as one error naming that line. Only once the
transaction has committed are the ids printed and the ``enqueued`` events emitted, batch by batch
from the storage's spool. A whole JSON document (one object spread over lines, or an array) is
read whole, as before: it is one value, so there is nothing to stream.

What the checks across the file remember grows only with what the file names explicitly: the ids
it gives (so a repeated id, or an ``after`` naming a later line, is caught) and its unique keys.
Generated ids need no memory: within one process they strictly increase.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator

from queuectl_core.errors import DuplicateJobError, UniqueKeyError, ValidationError
from queuectl_core.storage.capabilities import with_fallbacks

if TYPE_CHECKING:
    from queuectl_core.framework.app import App
    from queuectl_core.jobs.models import Job, NewJob

# Jobs per storage batch: large enough that a statement's overhead vanishes, small enough that a
# batch of long commands stays a few MiB.
BATCH = 2000
_AHEAD = 2  # batches the reader thread may have ready before storage takes them
_SWITCH = 0.0005  # seconds: the GIL switch interval while the reader runs beside storage
_GC_YOUNG = 20_000  # allocations between young-generation collections during the load (default 700)
_BOM = b"\xef\xbb\xbf"
_PROGRESS_EVERY = 0.2  # seconds between progress updates on a terminal


class Progress:
    """One self-overwriting status line on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, stream: Any = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = bool(enabled)
        self._last = 0.0
        self._shown = False

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_EVERY:
            return
        self._last = now
        self._shown = True
        try:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def done(self) -> None:
        if self.enabled and self._shown:
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._shown = False


def read_documents(stream: BinaryIO, name: str) -> Iterator[tuple[str, Any]]:
    """(label, JSON value) for each job in the file: ``line N`` for JSON Lines (read a line at a
    time), ``job N`` for the elements of an array (read whole)."""
    from queuectl_core.intake import jobspec

    lines = _lines(stream, name)
    first: tuple[int, str] | None = None
    for lineno, text in lines:
        if not text.isspace():
            first = (lineno, text)
            break
    if first is None:
        raise ValidationError("no jobs in input")
    lineno, text = first
    try:
        value = jobspec.loads(text)
    except json.JSONDecodeError:
        # Not a value on one line: a whole document (a pretty-printed object or array), or a
        # bad first line. Read whole and judged as before.
        rest = "".join(t for _, t in lines)
        docs = jobspec.parse_documents("\n" * (lineno - 1) + text + rest)
        if len(docs) == 1:
            yield "", docs[0]
        else:
            yield from ((f"job {n}", doc) for n, doc in enumerate(docs, 1))
        return
    except ValidationError as exc:
        raise ValidationError(f"line {lineno}: {exc}") from None
    if isinstance(value, list):
        following = next(((n, t) for n, t in lines if not t.isspace()), None)
        if following is None:  # the whole file is one array
            if not value:
                raise ValidationError("no jobs in input (empty array)")
            yield from ((f"job {n}" if len(value) > 1 else "", doc) for n, doc in enumerate(value, 1))
            return
        yield f"line {lineno}", value  # a line of JSON Lines that is not an object: refused
        lineno, text = following
        value = _load_line(lineno, text)
    yield f"line {lineno}", value
    loads = json.loads
    # json.loads is json's scanner behind two Python calls and a whitespace regex: ~1.0 µs a line
    # of 20 bytes, the scanner alone ~0.25. A line that is one value and then its newline is
    # scanned directly; anything else (leading blanks, trailing text, bad JSON) goes through
    # json.loads as before, which accepts or words the failure exactly as it always did.
    scan = _scanner()
    for lineno, text in lines:
        if scan is not None:
            try:
                value, end = scan(text, 0)
            except Exception:  # StopIteration, JSONDecodeError, RecursionError, ValueError
                end = -1
            if end >= 0 and (end == len(text) - 1 and text[end] == "\n" or end == len(text)):
                yield f"line {lineno}", value
                continue
        if text.isspace():
            continue
        try:
            value = loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"invalid JSON on line {lineno}: {exc.msg} (column {exc.colno})") from None
        except (RecursionError, ValueError):
            value = _load_line(lineno, text)  # the same failure, worded by jobspec
        yield f"line {lineno}", value


def _scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    """json.loads's own C scanner (same decoder, same strictness), or None without the C module."""
    from json import decoder, scanner

    make = getattr(scanner, "c_make_scanner", None)
    return make(decoder.JSONDecoder()) if make is not None else None


def _load_line(lineno: int, text: str) -> Any:
    from queuectl_core.intake import jobspec

    try:
        return jobspec.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"invalid JSON on line {lineno}: {exc.msg} (column {exc.colno})") from None
    except ValidationError as exc:
        raise ValidationError(f"line {lineno}: {exc}") from None


def _lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded as UTF-8 (a leading BOM tolerated); a bad byte is
    one error giving its offset in the file."""
    offset = 0
    lineno = 0
    while True:
        try:
            raw = stream.readline()
        except OSError as exc:  # EIO, a directory via '-', a vanished mount
            raise ValidationError(f"cannot read {name}: {exc.strerror or exc}") from None
        if not raw:
            return
        lineno += 1
        start = 0
        if lineno == 1 and raw.startswith(_BOM):
            start = len(_BOM)
        try:
            text = raw[start:].decode("utf-8") if start else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{name}: not UTF-8 text (bad byte at offset {offset + start + exc.start})") from None
        offset += len(raw)
        yield lineno, text


class _Batcher:
    """Validates labelled job objects into batches of NewJobs, with the checks that span the
    whole input (ids unique in it, ``after`` naming only earlier jobs, unique keys unique in it)."""

    def __init__(self, app: App, defaults: Callable[[list[Any]], list[Any]], progress: Progress) -> None:
        from queuectl_core.intake.jobspec import configured_no_retry

        self.max_retries = app.config["max_retries"]
        self.no_retry = configured_no_retry(app.config["no_retry_exit_codes"])
        self.defaults = defaults
        self.progress = progress
        self.seen: dict[str, str] = {}  # ids the input gave -> their labels
        self.forward: dict[str, str] = {}  # an `after` parent not (yet) seen in the input -> its child's label
        self.keys: dict[str, str] = {}  # unique_key -> the id holding it in the input
        # id -> label of the last few batches: the reader runs ahead of the batch storage is on
        self.recent: deque[dict[str, str]] = deque(maxlen=_AHEAD + 3)
        self.count = 0
        self.plain = self._plain_fields()

    def batches(self, docs: Iterable[tuple[str, Any]]) -> Iterator[list[NewJob]]:
        chunk: list[tuple[str, Any]] = []
        for item in docs:
            chunk.append(item)
            if len(chunk) >= BATCH:
                yield self._validate(chunk)
                chunk = []
        if chunk:
            yield self._validate(chunk)
        elif not self.count:
            raise ValidationError("no jobs in input")

    def _plain_fields(self) -> tuple[Any, ...] | None:
        """NewJob's fields after the id and command for a job object that is ``{"command": ...}``
        and nothing else: the defaults each gets (cwd, --env, --tag, the config's), validated
        once, by the very code that validates every other object. None if they are refused (then
        every object goes the ordinary way, and the first one says why, naming its line)."""
        from queuectl_core.intake.jobspec import job_fields

        try:
            return job_fields(self.defaults([{"command": "true"}])[0], self.max_retries, self.no_retry,
                              lambda: "x")[2:]
        except ValidationError:
            return None

    def _validate(self, chunk: list[tuple[str, Any]]) -> list[NewJob]:
        from queuectl_core.intake.jobspec import job_fields
        from queuectl_core.jobs.ids import new_ids
        from queuectl_core.jobs.models import NewJob

        make = NewJob  # every field, positionally, in JOB_FIELDS order
        next_id = iter(new_ids(len(chunk))).__next__
        objs: list[Any] | None = None  # the chunk with the defaults applied, made at the first object that needs it
        jobs: list[NewJob] = []
        labels: dict[str, str] = {}
        add = jobs.append
        seen, forward, keys = self.seen, self.forward, self.keys
        plain = self.plain
        if plain is not None:
            mr, pr, ra, de, to, qu, af, uk, ro, nro, cwd, env, tags, *more = plain
        for n, (label, raw) in enumerate(chunk):
            # The commonest line, {"command": "..."}: its one key checked here as job_fields does
            # (an ASCII command needs no UTF-8 check); anything else, or any doubt, goes there.
            if plain is not None and type(raw) is dict and len(raw) == 1:
                command = raw.get("command")
                if (type(command) is str and command and command.isascii() and not command.isspace()
                        and "\x00" not in command):
                    job_id = next_id()
                    add(make(job_id, command, mr, pr, ra, de, to, qu, af, uk, ro, nro, cwd,
                             dict(env) if env else {}, tags, *more))
                    labels[job_id] = label
                    continue
            if objs is None:
                objs = self.defaults([obj for _, obj in chunk])
            try:
                job = make(*job_fields(objs[n], self.max_retries, self.no_retry, next_id))
            except ValidationError as exc:
                raise ValidationError(f"{label}: {exc}" if label else str(exc)) from None
            prefix = f"{label}: " if label else ""
            job_id = job.id
            if isinstance(raw, dict) and "id" in raw:  # an id the input gave (generated ones are unique)
                if job_id in seen:
                    raise ValidationError(f"{prefix}duplicate id {job_id!r} in the input")
                if job_id in forward:
                    raise ValidationError(f"{forward[job_id]}: 'after' names {job_id!r}, which is not earlier"
                                          " in the input")
            # -- after: a parent must come earlier in the input --
            for parent in job.after:
                if parent == job_id:
                    raise ValidationError(f"{prefix}'after' names {parent!r}, which is not earlier in the input")
                if parent not in seen:
                    forward.setdefault(parent, label or "the job")
            if job.unique_key is not None:
                if job.unique_key in keys:
                    raise ValidationError(f"{prefix}unique_key {job.unique_key!r} is also held by"
                                          f" {keys[job.unique_key]!r} in the input")
                keys[job.unique_key] = job_id
            if isinstance(raw, dict) and "id" in raw:
                seen[job_id] = label
            labels[job_id] = label
            add(job)
        self.recent.append(labels)
        self.count += len(jobs)
        self.progress.update(f"queuectl: {self.count:,} jobs read and stored (not yet committed)")
        return jobs

    def each(self, lines: Iterable[tuple[int, str]], job: dict[str, Any],
             fill: Callable[[str], str]) -> Iterator[list[NewJob]]:
        """``enqueue --each``: one NewJob per non-empty line, its command ``fill(line)``, every
        other field the flags' (``job``), validated once by the code that validates any job."""
        from queuectl_core.intake.jobspec import JOB_FIELDS, job_fields
        from queuectl_core.jobs.ids import new_ids
        from queuectl_core.jobs.models import NewJob

        shared = job_fields(self.defaults([{**job, "command": fill("x")}])[0], self.max_retries, self.no_retry,
                            lambda: "x")[2:]
        env_at = JOB_FIELDS.index("env") - 2  # each job its own env dict
        make = NewJob
        chunk: list[tuple[int, str]] = []
        for lineno, text in lines:
            line = text.rstrip("\r\n")
            if not line or line.isspace():
                continue
            if "\x00" in line:
                raise ValidationError(f"line {lineno}: a NUL byte cannot be part of a command")
            chunk.append((lineno, fill(line)))
            if len(chunk) < BATCH:
                continue
            yield self._each_batch(chunk, shared, env_at, make, new_ids)
            chunk = []
        if chunk:
            yield self._each_batch(chunk, shared, env_at, make, new_ids)
        elif not self.count:
            raise ValidationError("no lines on stdin (--each makes one job per non-empty line)")

    def _each_batch(self, chunk: list[tuple[int, str]], shared: tuple[Any, ...], env_at: int,
                    make: Any, new_ids: Callable[[int], list[str]]) -> list[NewJob]:
        ids = new_ids(len(chunk))
        env = shared[env_at]
        if env:
            rest = shared[env_at + 1:]
            jobs = [make(i, cmd, *shared[:env_at], dict(env), *rest) for i, (_, cmd) in zip(ids, chunk)]
        else:
            jobs = [make(i, cmd, *shared) for i, (_, cmd) in zip(ids, chunk)]
        self.recent.append({i: f"line {n}" for i, (n, _) in zip(ids, chunk)})
        self.count += len(jobs)
        self.progress.update(f"queuectl: {self.count:,} jobs read and stored (not yet committed)")
        return jobs

    def label_of(self, job_id: str | None) -> str:
        """The label of a job storage refused: any id the input gave, or one of the last few batches."""
        if not job_id:
            return ""
        return self.seen.get(job_id) or next((labels[job_id] for labels in self.recent if job_id in labels), "")


class _ReadAhead:
    """Runs the reading, parsing and validating of batches in a thread, up to ``_AHEAD`` batches
    ahead of the storage writing them, so the two overlap on two CPUs: SQLite's work (and a
    PostgreSQL round trip) runs without the GIL. The batches come out in order; an exception
    from the reader (a bad line) comes out in its place, raised inside the storage's transaction
    as before. :meth:`close` stops the reader, which then reads no further."""

    def __init__(self, source: Iterator[list[NewJob]]) -> None:
        import queue
        import threading

        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=_AHEAD)
        self._full = queue.Full
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name="queuectl-enqueue-reader", daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[list[NewJob]]) -> None:
        try:
            for batch in source:
                if not self._put((True, batch)):
                    return
        except BaseException as exc:  # delivered to the consumer, which raises it
            self._put((False, exc))
            return
        self._put((False, None))

    def _put(self, item: tuple[bool, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except self._full:
                continue
        return False

    def __iter__(self) -> Iterator[list[NewJob]]:
        while True:
            ok, item = self._queue.get()
            if ok:
                yield item
            elif item is None:
                return
            else:
                raise item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def enqueue_file(app: App, stream: BinaryIO, name: str, defaults: Callable[[list[Any]], list[Any]],
                 out: Any = None, progress: Progress | None = None) -> int:
    """Enqueue every job of ``stream`` (all or none), then print their ids (one a line) and emit
    an ``enqueued`` event for each. Returns how many were enqueued."""
    return _load(app, stream, name, defaults, out, progress, None)


def enqueue_each(app: App, stream: BinaryIO, name: str, job: dict[str, Any], fill: Callable[[str], str],
                 defaults: Callable[[list[Any]], list[Any]], out: Any = None, progress: Progress | None = None) -> int:
    """``enqueue --each``: one job per non-empty line of ``stream``, its command ``fill(line)`` and
    its other fields ``job`` (a job object without command) with ``defaults`` applied; stored as
    :func:`enqueue_file` stores a file (one transaction, all or none), then the ids printed and the
    events emitted. Returns how many were enqueued."""
    return _load(app, stream, name, defaults, out, progress, (job, fill))


def _load(app: App, stream: BinaryIO, name: str, defaults: Callable[[list[Any]], list[Any]], out: Any,
          progress: Progress | None, each: tuple[dict[str, Any], Callable[[str], str]] | None) -> int:
    import gc

    out = out if out is not None else sys.stdout
    progress = progress if progress is not None else Progress()
    # Each job is a few short-lived containers (its parsed object, NewJob, Job, event), freed by
    # reference counting; the cyclic collector's youngest generation, run every 700 of them by
    # default, found nothing to free and cost ~10 % of the run. Rarer here, never off.
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], _GC_YOUNG), *thresholds[1:])
    try:
        committed = _store(app, stream, name, defaults, progress, each)
        return _announce(app, committed, out, progress)
    finally:
        gc.set_threshold(*thresholds)
        progress.done()


def _store(app: App, stream: BinaryIO, name: str, defaults: Callable[[list[Any]], list[Any]],
           progress: Progress, each: tuple[dict[str, Any], Callable[[str], str]] | None = None) -> Iterator[list[Job]]:
    storage = app.storage
    for attempt in range(5):
        batcher = _Batcher(app, defaults, progress)
        source = (batcher.each(_lines(stream, name), *each) if each is not None
                  else batcher.batches(read_documents(stream, name)))
        reader = _ReadAhead(source)
        switch = sys.getswitchinterval()
        # The reader holds the GIL between its batches; storage, back from SQLite or the server,
        # waits for it up to the switch interval (5 ms) each time, several times a batch.
        sys.setswitchinterval(min(switch, _SWITCH))
        try:
            try:
                # A storage without StreamingInsert: core's fallback, every batch in memory, one enqueue.
                # -- needs: refused, at the first job with needs, by a storage that cannot keep them
                from queuectl_core.jobs.needs import refuse_unsupported

                return with_fallbacks(storage).enqueue_stream(refuse_unsupported(storage, reader))
            finally:
                reader.close()
                sys.setswitchinterval(switch)
        except DuplicateJobError as exc:
            label = batcher.label_of(exc.job_id)
            if exc.job_id in batcher.seen or not _rewind(stream) or attempt == 4:
                raise DuplicateJobError(exc.job_id) if not label else ValidationError(f"{label}: {exc}") from None
            # An id we generated clashed with another process's (about 1 in 2 million per
            # millisecond): nothing was kept; read the file again, drawing new ids.
        except UniqueKeyError as exc:
            label = batcher.label_of(batcher.keys.get(exc.key or ""))
            raise ValidationError(f"{label}: {exc}" if label else str(exc)) from None
    raise AssertionError("unreachable")


def _rewind(stream: BinaryIO) -> bool:
    try:
        if not stream.seekable():
            return False
        stream.seek(0)
        return True
    except (OSError, ValueError):
        return False


def _announce(app: App, committed: Iterator[list[Job]], out: Any, progress: Progress) -> int:
    """After the commit: print the ids and emit one ``enqueued`` event per job, a batch at a time."""
    from queuectl_core.framework.plugins import emit_many
    from queuectl_core.jobs.models import EventKind, JobEvent
    from queuectl_core.jobs.timeutil import now

    config = app.config
    kind = EventKind.ENQUEUED
    event = JobEvent  # kind, job, worker_id, result, message, at, config
    total = 0
    at = now()  # they all happened at the commit
    for jobs in committed:
        if not jobs:
            continue
        out.write("\n".join([j.id for j in jobs]) + "\n")
        emit_many([event(kind, job, None, None, None, at, config) for job in jobs])
        total += len(jobs)
        progress.update(f"queuectl: {total:,} jobs enqueued")
    progress.update(f"queuectl: {total:,} jobs enqueued", force=True)
    out.flush()
    return total


__all__ = ["BATCH", "Progress", "enqueue_each", "enqueue_file", "read_documents"]
