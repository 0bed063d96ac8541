"""``POST /api/jobs``: enqueue over HTTP the JSON that ``queuectl enqueue --file`` takes.

A job runs a shell command as the workers' user, so this route is served only by a dashboard
started with a token, and only to a request carrying it, on loopback too; the other POST
actions' cross-site checks apply as they are (:func:`route` wraps the server's ``guarded``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from queuectl_core.api import App, DuplicateJobError, UniqueKeyError, ValidationError

if TYPE_CHECKING:
    from queuectl_core.api import Job

Handler = Callable[[Request], Awaitable[Response]]

MAX_BODY = 16 * 1024 * 1024  # bytes; a bigger batch is for `queuectl enqueue --file`, which streams
NO_TOKEN = ("enqueueing over HTTP runs commands as the workers' user, so it needs a token: start the dashboard"
            " with --token TOKEN (or queuectl config set dashboard.token TOKEN) and send"
            " Authorization: Bearer TOKEN")


def route(app: App, token: str, guarded: Callable[..., Handler]) -> Handler:
    """The handler of ``POST /api/jobs``: refused (403) without a token configured, else behind
    the server's ``guarded(..., write=True)``: the token, then the same-site checks."""
    checked = guarded(lambda request: _enqueue(app, request), write=True)

    async def run(request: Request) -> Response:
        if not token:
            return JSONResponse({"error": NO_TOKEN}, status_code=403)
        return await checked(request)

    return run


async def _enqueue(app: App, request: Request) -> Response:
    from queuectl_core.intake.jobspec import parse_documents
    from queuectl_core.intake.submit import submit

    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _error(413, f"the body is over {MAX_BODY // 1024 // 1024} MiB: enqueue a batch that big with"
                               " queuectl enqueue --file")
    try:
        text = bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _error(400, f"the body is not UTF-8 text (bad byte at offset {exc.start})")
    try:
        objs = parse_documents(text)  # one object, an array, or JSON Lines: as `enqueue --file` reads them
        # A job without cwd runs in the worker's directory: the dashboard's own means nothing to the client.
        jobs = submit(app, objs, local_cwd=False)
    except ValidationError as exc:
        return _error(400, str(exc))
    except (DuplicateJobError, UniqueKeyError) as exc:
        return _error(409, str(exc))
    shown = _shown(app, jobs)
    one = text.lstrip()[:1] == "{" and len(jobs) == 1
    return JSONResponse(shown[0] if one else shown, status_code=201)


def _shown(app: App, jobs: list[Job]) -> list[dict[str, Any]]:
    """As ``list --json`` prints them (``after``: what each still waits on), without the log path
    (as everywhere in the dashboard's JSON)."""
    from queuectl_core.cli.inspect import job_object

    held = [j.id for j in jobs if j.waiting]
    waits = app.storage.waits_on(held) if held else {}
    out = [job_object(j, waits.get(j.id), False) for j in jobs]
    for job in out:
        job.pop("log_path", None)
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
