"""`queuectl enqueue`: jobs from a command's words, flags, a JSON object, a file of them, or one per
line of stdin (``--each``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import click

from queuectl_core.cli.common import _app

if TYPE_CHECKING:
    pass

_AFTER_DASHES = "queuectl.enqueue.after_dashes"  # ctx.meta: the words came after `--`


class _EnqueueCommand(click.Command):
    """``enqueue``, which also notes whether the command's words came after ``--``: there, a first
    word starting with ``{`` or ``[`` is a command (``-- [ -f x ]``), not a JSON job."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # click consumes the list it parses
        rest = super().parse_args(ctx, args)
        words = ctx.params.get("words") or ()
        # Option parsing stops at `--` or at the first word (interspersed arguments are off), so
        # the words are the tail of the arguments; what stands just before them says which.
        at = len(given) - len(words) - 1
        ctx.meta[_AFTER_DASHES] = at >= 0 and given[at] == "--"
        return rest


# -- enqueue ------------------------------------------------------------------------------------
@click.command(cls=_EnqueueCommand, context_settings={"allow_interspersed_args": False})
@click.argument("words", nargs=-1, metavar="[-- COMMAND [ARG]... | JOB_JSON]")
@click.option("--id", "job_id", help="Job id (default: generated, short and sortable).")
@click.option("--cmd", "command", help="The command to run, as one shell command line (pipes, &&, $VARS).")
@click.option("--each", is_flag=True,
              help="One job per non-empty line of stdin, {} in the command replaced by the line, "
                   "shell-quoted. All or nothing.")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries after the first attempt (default: config max_retries).")
@click.option("--priority", type=int, help="Higher runs first (default 0).")
@click.option("--delay", help="Run no sooner than this from now: seconds, or 90s, 5m, 1h30m, 7d.")
@click.option("--run-at",
              help="Run no sooner than this ISO 8601 time (e.g. 2026-01-10T10:35:00Z; no zone: local time).")
@click.option("--timeout", help="Kill the job's whole process group after this long (seconds, or 30s, 5m, 2h).")
# Bytes, decoded by us: a file that is not UTF-8 must be one error line, not a traceback.
@click.option("--file", "file_", type=click.File("rb"),
              help="Read jobs from a file: one JSON object, an array, or JSON Lines; '-' reads stdin. "
                   "All or nothing.")
# -- scheduling --
@click.option("--queue", help="The queue to put it in (default: default).")
@click.option("--after", help="Run only once these jobs completed: ID[,ID...] (whole ids).")
@click.option("--unique-key", help="Refuse while a job with this key is pending, failed or processing.")
@click.option("--retry-on", help="Retry only these exit codes (e.g. 1,75); other exit codes go to the DLQ.")
@click.option("--no-retry-on", help="These exit codes go straight to the DLQ (e.g. 2,64).")
# -- where it runs, its environment, its tags (for every job given, JSON keys winning) ---------
@click.option("--cwd", "cwd", type=click.Path(file_okay=False), help="Run in this directory (default: the current one).")
@click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
              help="Set KEY for the job; KEY alone copies its value from this shell. Repeatable.")
@click.option("--tag", "tags", multiple=True, help="Label the job (list --tag finds it). Repeatable.")
# -- limits (its queue's and the config's defaults apply where not given) -------------------------
@click.option("--memory", metavar="SIZE",
              help="Stop the job when its processes use more memory: SIZE, e.g. 512M, 2G (0: no limit).")
@click.option("--cpu-time", metavar="DURATION",
              help="Stop the job when its processes used this much CPU time: 90s, 10m (0: no limit).")
@click.option("--needs", metavar="NAME=N[,NAME=N...]",
              help="Run only where these units are free: a worker's --resources or a pool (e.g. gpu=1).")
@click.pass_context
def enqueue(ctx: click.Context, words: tuple[str, ...], job_id: str | None, command: str | None, each: bool,
            max_retries: int | None, priority: int | None, delay: str | None, run_at: str | None,
            timeout: str | None, file_: Any, queue: str | None = None, after: str | None = None,
            unique_key: str | None = None, retry_on: str | None = None, no_retry_on: str | None = None,
            cwd: str | None = None, env: tuple[str, ...] = (), tags: tuple[str, ...] = (),
            memory: str | None = None, cpu_time: str | None = None, needs: str | None = None) -> None:
    """Add jobs to the queue; prints the id of each, one a line.

    Give the job's command in exactly one way:

    \b
      -- COMMAND [ARG]...  the words after --, each quoted as a shell needs it:
                           `-- rsync -a "my dir" host:` runs  rsync -a 'my dir' host:
      COMMAND [ARG]...     the same without --, unless the first word starts
                           with { or [ (then it is a JSON job)
      --cmd 'LINE'         one shell command line, run as written (pipes, &&, $VARS)
      JOB_JSON             a JSON job object: '{"command": "make", "priority": 5}'
      --file FILE          many jobs: a JSON array or JSON Lines ('-': stdin)

    Options go before the command: every word after the first word of the command is part of
    it. A single word that a shell would split or expand (`enqueue 'make test'`) is refused with
    a hint: give it as --cmd 'make test', or as separate words.

    With --each, one job is enqueued per non-empty line of stdin (a line of only blanks counts as
    empty), with every {} in the command replaced by the line (without its line break),
    shell-quoted; the command must contain {}. With -- or words, {} may be a whole word or part of
    one ({}.flac); with --cmd, do not quote {} yourself. Every job gets the other options (--id
    and --unique-key name one job, so they are refused). All the lines are enqueued in one
    transaction, or none if any is refused.

    A job runs in the directory it was enqueued from (or --cwd), with the worker's environment
    plus its --env. --after and --id take whole job ids, never prefixes.

    \b
      queuectl enqueue -- rsync -a "my dir" backup:
      queuectl enqueue --priority 5 make test
      queuectl enqueue --cmd 'make test | tee test.log' --cwd ~/src/app --env CI=1 --tag nightly
      queuectl enqueue --needs gpu=1 -- python train.py
      ls *.wav | queuectl enqueue --each --tag batch1 -- sox {} {}.flac
      queuectl enqueue '{"id": "job1", "command": "sleep 2"}'
      queuectl enqueue --file jobs.jsonl
    """
    from queuectl_core.intake.jobspec import (
        flag_job,
        flag_times,
        parse_job_argument,
        with_control_defaults,
    )

    after_dashes = bool(ctx.meta.get(_AFTER_DASHES))
    job_json: str | None = None
    if words and not after_dashes and words[0].lstrip()[:1] in ("{", "["):
        if len(words) > 1:
            raise click.UsageError("a JSON job is one argument, and options go before it; to run a command "
                                   "whose first word starts with { or [, put -- before the command")
        job_json, words = words[0], ()
    if after_dashes and not words:
        raise click.UsageError("give the command's words after --")
    if words and command is not None:
        raise click.UsageError("give the command once: --cmd 'LINE' or its words (after --), not both")
    if words and not after_dashes and len(words) == 1:
        _refuse_one_shell_line(words[0])
    flags = flag_job(job_id=job_id, max_retries=max_retries, priority=priority, delay=delay, run_at=run_at,
                     timeout=timeout, queue=queue, unique_key=unique_key, retry_on=retry_on,
                     no_retry_on=no_retry_on, after=after, memory=memory, cpu_time=cpu_time, needs=needs)
    has_command = command is not None or bool(words)
    sources = sum(x is not None for x in (job_json, file_)) + has_command
    if sources == 0:
        raise click.UsageError("give a command (-- COMMAND [ARG]... or --cmd 'LINE'), a JSON job argument, or --file"
                               if not each else "--each needs a command with {} in it: -- COMMAND {} or --cmd 'LINE'")
    if sources > 1:
        raise click.UsageError("give only one of: a command (--cmd, or words after --), a JSON job argument, "
                               "or --file")
    if each and not has_command:
        raise click.UsageError("--each makes its jobs from a command with {} (-- COMMAND {} or --cmd 'LINE'), "
                               "not from a JSON job or --file")
    if flags and not has_command:
        raise click.UsageError(f"{_flag_names(flags)} set a job's fields with a command (--cmd or -- COMMAND); "
                               "a JSON job or a --file carries its own")
    if delay is not None and run_at is not None:
        raise click.UsageError("give --delay or --run-at, not both")
    if flags:
        flags.update(flag_times(flags))
    defaults: Callable[[list[Any]], list[Any]] = lambda objs: with_control_defaults(objs, cwd, env, tags)  # noqa: E731
    if each:
        _enqueue_each(ctx, words, command, flags, defaults)
        return
    if file_ is not None:
        # Streamed in batches, one transaction, bounded memory, progress on a terminal.
        from queuectl_core.intake.bulk import enqueue_file

        enqueue_file(_app(ctx), file_, file_.name, defaults)
        return
    if job_json is not None:
        objs = [parse_job_argument(job_json)]
    elif command is not None:
        objs = [{**flags, "command": command}]
    else:
        import shlex

        objs = [{**flags, "command": shlex.join(words)}]
    # Checked, stored all or none and announced as the Python API and POST /api/jobs do it.
    from queuectl_core.intake.submit import submit

    created = submit(_app(ctx), defaults(objs), local_cwd=False)
    click.echo("\n".join(job.id for job in created))


def _flag_names(flags: dict[str, Any]) -> str:
    return ", ".join("--" + key.replace("_", "-") for key in flags)


def _refuse_one_shell_line(word: str) -> None:
    """One word without ``--`` that a shell would have to quote (``'make test'``, ``'a && b'``) is a
    command line typed as one argument: run quoted, it would look for a program of that name."""
    import shlex

    if shlex.quote(word) != word:
        from queuectl_core.intake.jobspec import suggest_cmd

        suggest_cmd(word)


def _enqueue_each(ctx: click.Context, words: tuple[str, ...], command: str | None, flags: dict[str, Any],
                  defaults: Callable[[list[Any]], list[Any]]) -> None:
    from queuectl_core.intake.bulk import enqueue_each

    for flag in ("id", "unique_key"):
        if flag in flags:
            raise click.UsageError(f"--{flag.replace('_', '-')} names one job; --each makes one job per line")
    fill = _placeholder_filler(words, command)
    import sys

    enqueue_each(_app(ctx), sys.stdin.buffer, "stdin", flags, fill, defaults)


def _placeholder_filler(words: tuple[str, ...], command: str | None) -> Callable[[str], str]:
    """The command for one line of ``--each``: {} replaced by the line, shell-quoted. With words,
    each word holding {} is quoted whole once filled ({}.flac and 'my file.wav' give
    'my file.wav.flac'); with --cmd, {} becomes the quoted line in the command as written."""
    import shlex

    if command is not None:
        if "{}" not in command:
            raise click.UsageError("--each: put {} in the command where each line goes")
        return lambda line: command.replace("{}", shlex.quote(line))
    if not any("{}" in w for w in words):
        raise click.UsageError("--each: put {} in the command where each line goes (-- COMMAND {})")
    quote = shlex.quote
    # (word, holds {}): the fixed words quoted once, not once a line
    parts = [(w, True) if "{}" in w else (quote(w), False) for w in words]

    def fill(line: str) -> str:
        return " ".join(quote(w.replace("{}", line)) if templated else w for w, templated in parts)

    return fill
