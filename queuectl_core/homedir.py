"""Where queuectl keeps its files (QUEUECTL_HOME), as text: found and checked without pathlib.

``queuectl_core.settings.home()`` is the same directory as a ``Path``. The click-free `queuectl
enqueue` (queuectl_core.fast_enqueue) uses this module instead: on Python 3.11 ``pathlib`` imports
``urllib.parse`` and ``ipaddress`` and costs ~2 ms of a ~25 ms enqueue (``bench/enqueue_floor.py``;
docs/operations.md, "The click-free `queuectl enqueue`").
"""

from __future__ import annotations

import os
import sys

from queuectl_core.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)
if TYPE_CHECKING:
    from os import PathLike


def home_text() -> str:
    """QUEUECTL_HOME (``~`` expanded), or the platform's per-user app directory."""
    env = os.environ.get("QUEUECTL_HOME")
    if env:
        try:
            return os.path.expanduser(check_path(env))
        except ValueError as exc:
            raise ConfigError(f"environment variable QUEUECTL_HOME: {exc}") from None
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        # click.get_app_dir's rule for these systems, without importing click (~18 ms at start-up).
        return os.path.join(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), "queuectl")
    import click

    return click.get_app_dir("queuectl")


def check_path(value: str) -> str:
    """A path setting must name something: not empty, no NUL, and a leading ``~user`` must be a
    user this machine knows (else every later command would fail expanding it). ValueError if not.
    Plugins pass it as a Setting's ``validate`` (``from queuectl_core.settings import check_path``)."""
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    if value.startswith("~") and os.path.expanduser(value).startswith("~"):
        # os.path.expanduser leaves what it cannot expand as it was (Path.expanduser raises).
        raise ValueError(f"{value.split('/', 1)[0]!r}: no such user (write the path in full)")
    return value


def expanded(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded and tidied as ``str(Path(path).expanduser())``
    would give it; ValueError when ``~`` cannot be expanded (an unknown user, no home directory),
    where ``Path.expanduser`` raises RuntimeError."""
    out = os.path.expanduser(path)
    if out.startswith("~"):
        raise ValueError(f"cannot expand {out.split('/', 1)[0]!r} (write the path in full)")
    return tidy(out)


def tidy(path: str) -> str:
    """``str(PurePosixPath(path))``: empty and ``.`` components and a trailing ``/`` dropped, a
    leading ``//`` kept (POSIX leaves its meaning to the system), ``..`` left alone (a symlink
    before it would change what it means). Hand-written for the reason this module exists."""
    root = "//" if path.startswith("//") and not path.startswith("///") else "/" if path.startswith("/") else ""
    return root + "/".join(part for part in path.split("/") if part and part != ".") or "."


def ensure_private_dir(path: str | PathLike[str]) -> None:
    """Create ``path`` 0700, or tighten it to 0700 if it exists with group/other bits, as ssh and
    gpg do for their own directories: config.toml may hold a DSN password, and the database every
    job's command. One stat when all is well; a directory we do not own is left as it is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            os.makedirs(path, mode=0o700)
            os.chmod(path, 0o700)  # whatever the umask
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create {os.fspath(path)}: {exc.strerror or exc}") from None
        return
    except OSError as exc:
        raise ConfigError(f"cannot use QUEUECTL_HOME {os.fspath(path)}: {exc.strerror or exc}") from None
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"QUEUECTL_HOME {os.fspath(path)} is not a directory")
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        try:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        except OSError:
            pass
