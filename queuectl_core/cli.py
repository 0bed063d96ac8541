"""The ``queuectl`` command line."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from queuectl_core import __version__
from queuectl_core.errors import QueuectlError

if TYPE_CHECKING:
    from queuectl_core.app import App
    from queuectl_core.models import Job

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")
_MAX_INT = 2**31 - 1


class JobId(click.ParamType):
    """A job id argument: text that cannot be an id (bad bytes, wrong characters) is refused here,
    before it reaches storage, which could not even encode some of it."""

    name = "job_id"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from queuectl_core.jobspec import ID_RULE, is_job_id, short

        if not is_job_id(value):
            self.fail(f"{short(value)} is not a job id (ids are {ID_RULE})", param, ctx)
        return value


class OneLineUsageError(click.UsageError):
    """A usage error shown as a single ``Error:`` line (click's default adds a usage block).

    The contract is one clear line on stderr for every error, so scripts can log it and users
    see the cause without scrolling; the help hint goes on the same line. Exit status stays 2.
    """

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{hint}", file=file or sys.stderr)


def _one_line(exc: click.UsageError) -> click.UsageError:
    # A bare group's help screen (NoArgsIsHelpError) is help, not an error: leave it alone.
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


class QueuectlGroup(click.Group):
    """A group whose commands turn every QueuectlError into one ``Error:`` line and exit 1,
    and every usage error into one ``Error:`` line and exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        # The root group's own arguments are parsed here, outside any parent's invoke().
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QueuectlError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:  # subcommand parsing and our own UsageErrors
            raise _one_line(exc) from None
        except BrokenPipeError:
            _quiet_broken_pipe()

    def group(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", QueuectlGroup)
        return super().group(*args, **kwargs)


def _quiet_broken_pipe() -> NoReturn:
    import os

    # `queuectl list | head`: the reader left; exit quietly without a traceback on flush.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)


def _app(ctx: click.Context) -> App:
    from queuectl_core.app import App

    if ctx.obj is None:
        ctx.obj = App()
        ctx.call_on_close(ctx.obj.close)
    return ctx.obj


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=QueuectlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="queuectl")
def cli() -> None:
    """A background job queue for shell commands: enqueue, run with workers, retry with backoff,
    park what keeps failing in a dead letter queue.

    State lives in QUEUECTL_HOME (default: the per-user app directory).
    """


# -- enqueue ------------------------------------------------------------------------------------
@cli.command()
@click.argument("job_json", required=False)
@click.option("--id", "job_id", help="Job id (default: generated, short and sortable).")
@click.option("--cmd", "command", help="The shell command to run.")
@click.option("--max-retries", type=int, help="Retries after the first attempt (default: config max_retries).")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--delay", help="Run no sooner than this from now: seconds, or 90s, 5m, 1h30m, 7d.")
@click.option("--run-at",
              help="Run no sooner than this ISO 8601 time (e.g. 2026-01-10T10:35:00Z; no zone: local time).")
@click.option("--timeout", help="Kill the job's whole process group after this long (seconds, or 30s, 5m, 2h).")
# Bytes, decoded by us: a file that is not UTF-8 must be one error line, not a traceback.
@click.option("--file", "file_", type=click.File("rb"),
              help="Read jobs from a file: one JSON object, an array, or JSON Lines; '-' reads stdin.")
# -- §10: where it runs, its environment, its tags (for every job given, JSON keys winning) ---------
@click.option("--cwd", "cwd", type=click.Path(file_okay=False), help="Run in this directory (default: the current one).")
@click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
              help="Set KEY for the job; KEY alone copies its value from this shell. Repeatable.")
@click.option("--tag", "tags", multiple=True, help="Label the job (list --tag finds it). Repeatable.")
@click.pass_context
def enqueue(ctx: click.Context, job_json: str | None, job_id: str | None, command: str | None,
            max_retries: int | None, priority: int | None, delay: str | None, run_at: str | None,
            timeout: str | None, file_: Any, cwd: str | None, env: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Add jobs to the queue; prints the id of each. A job runs in the directory it was enqueued
    from (or --cwd), with the worker's environment plus its --env.

    \b
      queuectl enqueue --cmd 'echo hello'
      queuectl enqueue --cmd 'make test' --cwd ~/src/app --env CI=1 --env HOME --tag nightly
      queuectl enqueue '{"id": "job1", "command": "sleep 2"}'
      queuectl enqueue --file jobs.jsonl        # all or nothing
    """
    from queuectl_core import jobspec
    from queuectl_core.errors import ValidationError

    flags = {"id": job_id, "command": command, "max_retries": max_retries, "priority": priority,
             "delay": delay, "run_at": run_at, "timeout": timeout}
    given = {k: v for k, v in flags.items() if v is not None}
    sources = sum(x is not None for x in (job_json, file_)) + (1 if given else 0)
    if sources == 0:
        raise click.UsageError("give --cmd, a JSON job argument, or --file")
    if sources > 1:
        raise click.UsageError("give only one of: flags (--cmd ...), a JSON job argument, or --file")
    if given and "command" not in given:
        raise click.UsageError("--cmd is required (or pass a JSON job, or --file)")
    if delay is not None and run_at is not None:
        raise click.UsageError("give --delay or --run-at, not both")
    if given:
        given.update(_flag_times(given))
    if file_ is not None:
        try:
            raw = file_.read()
        except OSError as exc:  # EIO, a directory via '-', a vanished mount
            raise ValidationError(f"cannot read {file_.name}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8-sig")  # -sig: tolerate the BOM some editors write
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{file_.name}: not UTF-8 text (bad byte at offset {exc.start})") from None
        objs = jobspec.parse_documents(text)
    elif job_json is not None:
        objs = [_parse_job_argument(job_json)]
    else:
        objs = [given]
    objs = _with_control_defaults(objs, cwd, env, tags)
    app = _app(ctx)
    jobs = jobspec.validate_all(objs, app.config["max_retries"])
    created = _enqueue_with_fresh_ids(app, jobs, {o.get("id") for o in objs if isinstance(o, dict)})
    from queuectl_core.models import EventKind, JobEvent
    from queuectl_core.plugins import emit

    for job in created:
        emit(JobEvent(EventKind.ENQUEUED, job=job))
    click.echo("\n".join(job.id for job in created))


def _with_control_defaults(objs: list[Any], cwd: str | None, env: tuple[str, ...],
                           tags: tuple[str, ...]) -> list[Any]:
    """§10: every job records where it was enqueued from (``--cwd`` overrides), and carries the
    ``--env`` and ``--tag`` given; a job object's own ``cwd``, ``env`` keys and ``tags`` win."""
    import os

    from queuectl_core.errors import ValidationError

    if cwd is None:
        try:
            where: str | None = os.getcwd()
        except OSError:  # the shell's directory was removed: the worker's own is all there is
            where = None
    else:
        where = os.path.abspath(os.path.expanduser(cwd))
        if not os.path.isdir(where):
            raise ValidationError(f"--cwd {cwd!r} is not a directory")
    extra: dict[str, str] = {}
    for item in env:
        key, eq, value = item.partition("=")
        if not eq:
            if key not in os.environ:
                raise ValidationError(f"--env {key}: {key} is not set in this shell (give --env {key}=VALUE)")
            value = os.environ[key]
        extra[key] = value
    out = []
    for obj in objs:
        if isinstance(obj, dict):
            obj = dict(obj)
            if "cwd" not in obj and where is not None:
                obj["cwd"] = where
            if extra:
                obj["env"] = {**extra, **obj["env"]} if isinstance(obj.get("env"), dict) else obj.get("env", extra)
            if tags:
                obj["tags"] = [*tags, *obj["tags"]] if isinstance(obj.get("tags"), list) else obj.get("tags", list(tags))
        out.append(obj)
    return out


def _flag_times(flags: dict[str, Any]) -> dict[str, Any]:
    """Flags are typed by people: durations with units, and a --run-at without a zone is local
    time. Converted here to what a JSON job holds; jobspec then checks ranges as for JSON."""
    from queuectl_core.errors import ValidationError
    from queuectl_core.timeutil import format_time, parse_duration, parse_time

    parsers = {"delay": parse_duration, "timeout": parse_duration,
               "run_at": lambda text: format_time(parse_time(text, local_if_naive=True))}
    out: dict[str, Any] = {}
    for key, parse in parsers.items():
        if key in flags:
            try:
                out[key] = parse(flags[key])
            except ValueError as exc:
                raise ValidationError(f"{key!r}: {exc}") from None
    return out


def _parse_job_argument(text: str) -> Any:
    """The positional JSON job; something that is plainly a shell command gets a hint to --cmd."""
    from queuectl_core import jobspec
    from queuectl_core.errors import ValidationError

    try:
        obj = jobspec.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] not in ("{", "[", '"'):
            _suggest_cmd(text)
        raise ValidationError(f"invalid JSON job: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, (dict, list)):
        _suggest_cmd(text)
    return obj


def _suggest_cmd(text: str) -> NoReturn:
    import shlex

    from queuectl_core.errors import ValidationError
    from queuectl_core.jobspec import short

    try:
        text.encode("utf-8")
        quoted = shlex.quote(text)
    except UnicodeEncodeError:
        quoted = "'...'"
    if len(quoted) > 80:
        quoted = "'...'"
    raise ValidationError(f"{short(text)} is not a JSON job; to enqueue a shell command use: "
                          f"queuectl enqueue --cmd {quoted}")


def _enqueue_with_fresh_ids(app: App, jobs: list[Any], given_ids: set[Any]) -> list[Job]:
    """Enqueue; a clash on an id we generated (never one the user chose) draws a new id."""
    from dataclasses import replace

    from queuectl_core.errors import DuplicateJobError
    from queuectl_core.ids import new_id

    for _ in range(5):
        try:
            return app.storage.enqueue(jobs)
        except DuplicateJobError as exc:
            if exc.job_id in given_ids:
                raise
            jobs = [replace(j, id=new_id()) if j.id == exc.job_id else j for j in jobs]
    return app.storage.enqueue(jobs)


# -- workers ------------------------------------------------------------------------------------
@cli.group()
def worker() -> None:
    """Run and stop workers."""


@worker.command("start")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 512), help="Worker processes.")
@click.option("--burst", is_flag=True, help="Drain the queue (waiting for scheduled retries), then exit.")
@click.pass_context
def worker_start(ctx: click.Context, count: int, burst: bool) -> None:
    """Run workers in the foreground. Ctrl+C or SIGTERM: finish running jobs, then exit;
    a second one stops at once and releases the jobs."""
    # Hold Ctrl+C/SIGTERM (pending, not lost) until the workers' handlers exist: a stop request
    # during start-up is then honoured gracefully instead of aborting half-way. supervise() and
    # the worker unblock them when ready.
    from queuectl_core.signals import held

    with held():
        code = _start_workers(ctx, count, burst)
    ctx.exit(code)


def _start_workers(ctx: click.Context, count: int, burst: bool) -> int:
    from queuectl_core.supervisor import supervise

    app = _app(ctx)
    # Fail fast, with one line, on a bad provider name or an unreachable store, before forking.
    for registry in (app.registries.storages, app.registries.executors, app.registries.backoffs):
        registry.get(app.config[registry.config_key])
    app.storage  # noqa: B018 - opens (and migrates) the store
    app.executor  # noqa: B018
    app.backoff  # noqa: B018
    app.close()  # never carry an open database connection across fork()

    def run_one() -> int:
        from queuectl_core.app import App
        from queuectl_core.worker import Worker

        worker_app = App()
        try:
            return Worker(worker_app, burst=burst).run()
        finally:
            worker_app.close()

    return supervise(count, run_one)


@worker.command("stop")
@click.pass_context
def worker_stop(ctx: click.Context) -> None:
    """Ask every worker using this queue to finish its current job and exit."""
    n = _app(ctx).storage.request_stop()
    click.echo(f"asked {n} worker(s) to stop" if n else "no live workers")


# -- inspecting ---------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """How many jobs are in each state, and the live workers."""
    app = _app(ctx)
    counts = app.storage.counts()
    workers = app.storage.live_workers()
    if as_json:
        _print_json({"counts": {str(s): n for s, n in counts.items()}, "workers": [w.to_dict() for w in workers]})
        return
    for state, n in counts.items():
        click.echo(f"{state:<11} {n}")
    click.echo(f"workers     {len(workers)}")
    from queuectl_core.timeutil import format_time

    for w in workers:
        doing = f"running {w.current_job}" if w.current_job else "idle"
        click.echo(f"  {w.id} on {w.hostname}, since {format_time(w.started_at)}, {doing}")


def _job_table(jobs: list[Job], with_error: bool = False) -> None:
    from queuectl_core.timeutil import format_time

    if not jobs:
        click.echo("no jobs")
        return
    rows = [("ID", "STATE", "ATTEMPTS", "PRIORITY", "RUN_AT", "LAST_ERROR" if with_error else "COMMAND")]
    for j in jobs:
        last = (j.last_error or "") if with_error else j.command
        rows.append((j.id, str(j.state), f"{j.attempts}/{j.max_retries + 1}", str(j.priority),
                     format_time(j.run_at) or "", last.replace("\n", " ")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5][:80])


@cli.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, _MAX_INT), help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of jobs.")
@click.pass_context
def list_(ctx: click.Context, state: str | None, limit: int | None, as_json: bool) -> None:
    """List jobs, newest first."""
    from queuectl_core.models import JobState

    jobs = _app(ctx).storage.list_jobs(JobState(state) if state else None, limit)
    if as_json:
        _print_json([j.to_dict() for j in jobs])
    else:
        _job_table(jobs)


@cli.command()
@click.argument("job_id", type=JobId())
@click.pass_context
def logs(ctx: click.Context, job_id: str) -> None:
    """Print the captured stdout and stderr of a job's last attempt."""
    from queuectl_core.errors import JobNotFoundError

    job = _app(ctx).storage.get(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    if job.log_path is None:
        if job.attempts == 0:
            raise click.ClickException(f"job {job_id!r} has not run yet")
        raise click.ClickException(f"job {job_id!r} has no finished attempt with output yet")
    out = sys.stdout.buffer
    tail = job.output_tail or ""
    # The executor appends this note to the stored tail when the disk refused the log (full,
    # unwritable): the file, if any, then stops short of what the job printed.
    write_failed = _LOG_WRITE_FAILED in tail
    try:
        with open(job.log_path, "rb") as fh:
            while chunk := fh.read(1 << 16):
                out.write(chunk)
    except OSError as exc:
        if tail:
            if write_failed and isinstance(exc, FileNotFoundError):
                why = f"was never written ({_write_failure(tail)})"
            elif isinstance(exc, FileNotFoundError):
                why = "is not on this machine"
            else:
                why = f"cannot be read ({exc.strerror})"
            out.flush()
            click.echo(f"(log file {job.log_path} {why}; showing the stored tail)", err=True)
            out.write(tail.encode())
        elif not isinstance(exc, FileNotFoundError):
            raise click.ClickException(f"cannot read {job.log_path}: {exc.strerror}") from None
        # else: the attempt printed nothing, so no file was ever made
    else:
        if write_failed:
            out.flush()
            click.echo(f"(log file {job.log_path} is incomplete: {_write_failure(tail)}; "
                       f"the last {len(tail.encode())} bytes of output, as stored, follow)", err=True)
            out.write(b"\n[queuectl: the log file ends here; the stored tail follows]\n")
            out.write(tail.encode())
    out.flush()


_LOG_WRITE_FAILED = "[queuectl: cannot write the log file "


def _write_failure(tail: str) -> str:
    """The reason from the executor's note, e.g. 'No space left on device'."""
    note = tail[tail.rindex(_LOG_WRITE_FAILED):].strip().rstrip("]")
    return note.rpartition(": ")[2] or "writing it failed"


# -- DLQ ----------------------------------------------------------------------------------------
@cli.group()
def dlq() -> None:
    """The dead letter queue: jobs that exhausted their retries."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of jobs.")
@click.pass_context
def dlq_list(ctx: click.Context, as_json: bool) -> None:
    """List dead jobs with their last error."""
    from queuectl_core.models import JobState

    jobs = _app(ctx).storage.list_jobs(JobState.DEAD)
    if as_json:
        _print_json([j.to_dict() for j in jobs])
    else:
        _job_table(jobs, with_error=True)


@dlq.command("retry")
@click.argument("job_id", type=JobId())
@click.pass_context
def dlq_retry(ctx: click.Context, job_id: str) -> None:
    """Put a dead job back in the queue with its attempts reset."""
    from queuectl_core.actions import replay
    from queuectl_core.models import EventKind, JobEvent
    from queuectl_core.plugins import emit

    job = replay(_app(ctx).storage, job_id)
    emit(JobEvent(EventKind.RETRIED, job=job))
    click.echo(job.id)


# -- config -------------------------------------------------------------------------------------
@cli.group()
def config() -> None:
    """Show and change settings (config.toml in QUEUECTL_HOME)."""


# ignore_unknown_options: `config set max_retries -1` must reach validation ("must be >= 0")
# rather than die as "no such option -1".
@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value")
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY to VALUE, validated; max-retries and max_retries are the same key."""
    from queuectl_core.settings import write_file_values

    app = _app(ctx)
    setting = app.config.setting(key)
    coerced = setting.coerce(value)
    for registry in (app.registries.storages, app.registries.executors, app.registries.backoffs):
        if setting.key == registry.config_key:
            registry.get(coerced)
    values = dict(app.config.file_values)
    values[setting.key] = coerced
    write_file_values(app.home, values)
    click.echo(f"{setting.key} = {setting.shown(coerced)}")
    if setting.env_var in app.config.env:
        click.echo(f"note: {setting.env_var} is set and overrides this", err=True)


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Every effective setting, its default, and where its value came from."""
    app = _app(ctx)
    cfg = app.config
    rows = []
    for key in cfg.keys():
        s = cfg.setting(key)
        rows.append({"key": key, "value": s.shown(cfg.get(key)), "default": s.shown(s.default_for(cfg.home)),
                     "source": cfg.source(key), "plugin": s.plugin, "help": s.help})
    if as_json:
        _print_json({"config_file": str(cfg.path), "settings": {r.pop("key"): r for r in rows}})
        return
    click.echo(f"# {cfg.path}")
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        extra = "" if r["source"] == "default" else f"  (default {r['default']!r}; from {r['source']})"
        click.echo(f"{r['key']:<{width}} = {r['value']!r}{extra}")


# -- plugins ------------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Each plugin, its version, the hooks it implements and what it provides."""
    from queuectl_core.plugins import plugin_version, pm

    # Through App, like every other command: a corrupt config.toml is reported here too rather
    # than surfacing later in a worker. App opens no storage until asked, so this stays cheap.
    regs = _app(ctx).registries
    out: list[dict[str, Any]] = []
    blocked: list[str] = []
    for name, plugin in sorted(pm.list_name_plugin()):
        if plugin is None:  # pluggy keeps a blocked name (QUEUECTL_DISABLE_PLUGINS) mapped to None
            blocked.append(name)
            continue
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        out.append({
            "name": name,
            "module": getattr(plugin, "__name__", repr(plugin)),
            "version": plugin_version(name),
            "hooks": hooks,
            "provides": {
                "storages": regs.storages.by_plugin(name),
                "executors": regs.executors.by_plugin(name),
                "backoff_policies": regs.backoffs.by_plugin(name),
                "settings": regs.settings_by_plugin(name),
            },
        })
    if as_json:
        _print_json(out)
        return
    for p in out:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["provides"].items() if v)
        click.echo(f"{p['name']} {p['version'] or ''}".rstrip())
        click.echo(f"  hooks: {', '.join(p['hooks'])}")
        if provides:
            click.echo(f"  provides: {provides}")
    if blocked:
        click.echo(f"disabled by QUEUECTL_DISABLE_PLUGINS: {', '.join(blocked)}")


def main() -> None:
    """Entry point: load plugins (they may add commands), then run the CLI."""
    from queuectl_core.plugins import call_each, load_plugins

    try:
        load_plugins()
        call_each("queuectl_register_commands", cli=cli)
    except QueuectlError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    try:
        cli(prog_name="queuectl")
    except KeyboardInterrupt:  # Ctrl+C while Python was still starting up: no traceback
        sys.exit(130)
