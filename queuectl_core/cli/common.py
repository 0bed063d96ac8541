"""What every ``queuectl`` command shares: one-line errors, the App a command opens, job-id
arguments, JSON output and the small parsers several commands use."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from queuectl_core.errors import QueuectlError

if TYPE_CHECKING:
    from queuectl_core.framework.app import App

STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")
_MAX_INT = 2**31 - 1
_STATUS_JOBS_PER_WORKER = 5  # `status` lines per worker; past it, "+N more"


class JobId(click.ParamType):
    """A job id argument, or a unique prefix of one (``1m98`` for ``1m986kfq60cf6n``).

    Text that cannot be an id (bad bytes, wrong characters) is refused here, before it reaches
    storage, which could not even encode some of it. Otherwise the storage is asked which ids
    start with it: an id equal to it always wins; one id starting with it is that id; several are
    one error listing some of them; none leaves it as typed, so the command's own "no job" error
    speaks. ``prefix=False`` takes whole ids only (``--after``, ``--id``)."""

    name = "job_id"
    CANDIDATES = 5  # ids an ambiguous prefix's error lists

    def __init__(self, prefix: bool = True) -> None:
        self.prefix = prefix

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from queuectl_core.intake.jobspec import ID_RULE, is_job_id, short

        if not is_job_id(value):
            self.fail(f"{short(value)} is not a job id (ids are {ID_RULE})", param, ctx)
        if not self.prefix or ctx is None or ctx.resilient_parsing:
            return value
        return resolve_prefix(_app(ctx).storage, value, self.CANDIDATES)

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list[Any]:
        """Job ids from the queue (newest first), for `queuectl completion`'s scripts."""
        from click.shell_completion import CompletionItem

        try:
            from queuectl_core.framework.app import App

            app = App()
            try:
                jobs = app.storage.list_jobs(None, 2000)
            finally:
                app.close()
        except Exception:  # completion must never print a traceback into the user's shell
            return []
        return [CompletionItem(j.id, help=f"{j.state}: {j.command[:40]}") for j in jobs if j.id.startswith(incomplete)]


def resolve_prefix(storage: Any, text: str, candidates: int = 5) -> str:
    """The job id ``text`` names: itself when a job has that id, else the one id starting with it,
    else ``text`` unchanged when none does (the caller's lookup then says no job has it). Several
    ids starting with it are one error naming the first ``candidates`` of them."""
    from queuectl_core.errors import ValidationError

    ids = storage.ids_with_prefix(text, candidates + 1)
    if not ids or ids[0] == text:
        return text
    if len(ids) == 1:
        return str(ids[0])
    shown = ", ".join(ids[:candidates]) + (", …" if len(ids) > candidates else "")
    raise ValidationError(f"{text!r} is the start of several job ids ({shown}); type more of it")


class OneLineUsageError(click.UsageError):
    """A usage error shown as a single ``Error:`` line (click's default adds a usage block).

    The contract is one clear line on stderr for every error, so scripts can log it and users
    see the cause without scrolling; the help hint goes on the same line. Exit status stays 2.
    """

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {_cut_quotes(self.format_message())}{hint}", file=file or sys.stderr)


def _cut_quotes(message: str) -> str:
    """click quotes the bad value whole; a 5,000-digit argument must not become a 5 KB line."""
    if len(message) < 200:
        return message
    import re

    return re.sub(r"'([^']{60})[^']+'", r"'\1…'", message)


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
    from queuectl_core.framework.app import App

    if ctx.obj is None:
        ctx.obj = App()
        ctx.call_on_close(ctx.obj.close)
    return ctx.obj


def _print_json(data: Any) -> None:
    import json  # here: most commands print no JSON (`enqueue --cmd` imports no json at all)

    click.echo(json.dumps(data, indent=2, ensure_ascii=False))

def _duration(flag: str, text: str) -> float:
    from queuectl_core.errors import ValidationError
    from queuectl_core.jobs.timeutil import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValidationError(f"{flag}: {exc}") from None


def _checked_cmd(command: str | None) -> str | None:
    from queuectl_core.errors import ValidationError
    from queuectl_core.intake.jobspec import utf8_text

    if command is None:
        return None
    if not command.strip() or "\x00" in command:
        raise ValidationError("--cmd must be a non-empty command without NUL bytes")
    return utf8_text("--cmd", command)


def _executor(app: App) -> object:
    """The configured executor, which deletes the logs of removed jobs (or None: see joblogs)."""
    from queuectl_core.control.joblogs import configured_executor

    return configured_executor(app)
