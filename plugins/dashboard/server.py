"""The dashboard's web app: the page, its JSON API, /metrics, and who may use them.

Starlette (a small, well-kept ASGI toolkit) serves it and uvicorn runs it. Handlers are ``async``
and call the storage directly on the event loop's thread: one connection, used by one thread,
as every storage backend expects; each query takes milliseconds.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from queuectl_core.api import App, JobNotFoundError, QueuectlError, StorageError, ValidationError

from . import metrics, submit
from .data import Data

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "queuectl_token"
CSRF_COOKIE = "queuectl_csrf"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """``Host`` without its port (``[::1]:8777`` → ``::1``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def build(app: App, token: str = "", bind: str = "127.0.0.1") -> Starlette:
    """The ASGI app for one queue. With ``token``, every request must carry it; without one,
    only requests addressed to a loopback name are served (so a web page elsewhere cannot reach
    it through DNS rebinding)."""
    data = Data(app)
    exporter = metrics.Exporter(data)
    page = (STATIC / "index.html").read_text()

    def bearer(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth[:7].lower() == "bearer " else None

    def authorised(request: Request) -> bool:
        if not token:
            return is_loopback(_host_name(request.headers.get("host", "")))
        return any(_same(s, token) for s in (bearer(request), request.query_params.get("token"),
                                             request.cookies.get(TOKEN_COOKIE)))

    def guarded(handler: Handler, write: bool = False) -> Handler:
        async def run(request: Request) -> Response:
            if not authorised(request):
                return _error(401, "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN on the page URL")
            if write and not _same_site(request):
                return _error(403, "refused: a cross-site request (missing or wrong CSRF token)")
            try:
                return await handler(request)
            except JobNotFoundError as exc:
                return _error(404, str(exc))
            except ValidationError as exc:
                return _error(409, str(exc))
            except StorageError as exc:
                return _error(503, str(exc))
            except QueuectlError as exc:
                return _error(400, str(exc))

        return run

    def _same_site(request: Request) -> bool:
        """A POST from the page itself: the browser says so (Sec-Fetch-Site, Origin) and it
        carries the per-session CSRF token that only a same-origin script can read. A request
        with the bearer token in its header is a program, not a browser: no cookie, no CSRF."""
        if token and _same(bearer(request), token):
            return True
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return False
        return _same(request.headers.get(CSRF_HEADER), request.cookies.get(CSRF_COOKIE))

    async def index(request: Request) -> Response:
        if token and _same(request.query_params.get("token"), token):
            # The token leaves the URL (history, screenshots) for an HttpOnly cookie.
            rest = {k: v for k, v in request.query_params.items() if k != "token"}
            response: Response = RedirectResponse("/" + (f"?{urlencode(rest)}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = HTMLResponse(page.replace("{{csrf}}", csrf),
                                headers={"cache-control": "no-store", "x-frame-options": "DENY",
                                         "content-security-policy": "default-src 'self'; img-src 'self' data:;"
                                         " frame-ancestors 'none'", "referrer-policy": "no-referrer"})
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    async def overview(request: Request) -> Response:
        return JSONResponse(data.overview())

    async def throughput(request: Request) -> Response:
        return JSONResponse(data.throughput())

    async def jobs(request: Request) -> Response:
        p = request.query_params
        try:
            limit = int(p.get("limit", "50"))
        except ValueError:
            raise ValidationError("limit must be a number") from None
        return JSONResponse(data.jobs(state=p.get("state") or None, queue=p.get("queue") or None,
                                      tag=p.get("tag") or None, before=p.get("before") or None, limit=limit))

    async def job(request: Request) -> Response:
        return JSONResponse(data.job(request.path_params["job_id"]))

    async def log(request: Request) -> Response:
        attempt = request.query_params.get("attempt")
        if attempt is not None and not attempt.isdigit():
            raise ValidationError("attempt must be a number")
        return JSONResponse(data.log(request.path_params["job_id"], int(attempt) if attempt else None))

    async def act(request: Request) -> Response:
        return JSONResponse(data.act(request.path_params["job_id"], request.path_params["action"]))

    async def queue(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            return _error(404, f"unknown action {action!r}")
        data.set_paused(request.path_params["name"], action == "pause")
        return JSONResponse({"name": request.path_params["name"], "paused": action == "pause"})

    async def scrape(request: Request) -> Response:
        body, content_type = exporter.render()
        return Response(body, media_type=content_type)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes: list[Route | Mount] = [
        Route("/", guarded(index)),
        Route("/api/overview", guarded(overview)),
        Route("/api/throughput", guarded(throughput)),
        Route("/api/jobs", guarded(jobs)),
        Route("/api/jobs", submit.route(app, token, guarded), methods=["POST"]),
        Route("/api/jobs/{job_id}", guarded(job)),
        Route("/api/jobs/{job_id}/log", guarded(log)),
        Route("/api/jobs/{job_id}/{action}", guarded(act, write=True), methods=["POST"]),
        Route("/api/queues/{name}/{action}", guarded(queue, write=True), methods=["POST"]),
        Route("/metrics", guarded(scrape)),
        Route("/healthz", health),
    ]
    static = StaticFiles(directory=STATIC)

    async def assets(scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        if not authorised(request):
            await _error(401, "a token is required")(scope, receive, send)
            return
        await static(scope, receive, send)

    routes.append(Mount("/static", app=assets))
    return Starlette(routes=routes)


def serve(app: App, host: str, port: int, token: str) -> None:
    """Run the dashboard until Ctrl+C. Off loopback, a token is required."""
    import uvicorn

    if not token and not is_loopback(host):
        raise QueuectlError(f"the dashboard listens on {host}, beyond this machine: give it a token "
                            "(--token TOKEN, or queuectl config set dashboard.token TOKEN)")
    shown = f"[{host}]" if ":" in host else host
    # Bound here, before a word is printed: a port in use is one Error: line and nothing else.
    sock = _listen(host, port, shown)
    config = uvicorn.Config(build(app, token, host), log_level="warning", access_log=False, server_header=False)
    print(f"queuectl dashboard on http://{shown}:{port}/ (Ctrl+C stops it)", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _listen(host: str, port: int, shown: str) -> Any:
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise QueuectlError(f"the dashboard cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise QueuectlError(f"port {port} on {shown} is in use (choose another: --port N, or "
                                "queuectl config set dashboard.port N)") from None
        raise QueuectlError(f"the dashboard cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
