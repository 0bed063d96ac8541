"""Config keys (core and plugin), the one config.toml, and how values are resolved.

A value comes from, in order: the environment (``QUEUECTL_<KEY>``, dots as underscores), then
config.toml, then the key's default.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from queuectl_core.errors import ConfigError

CONFIG_FILE = "config.toml"


def home() -> Path:
    """QUEUECTL_HOME (``~`` expanded), or the platform's per-user app directory."""
    env = os.environ.get("QUEUECTL_HOME")
    if env:
        try:
            return Path(os.path.expanduser(check_path(env)))
        except ValueError as exc:
            raise ConfigError(f"environment variable QUEUECTL_HOME: {exc}") from None
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        # click.get_app_dir's rule for these systems; settings is imported by plugins that need no click.
        return Path(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), "queuectl")
    import click

    return Path(click.get_app_dir("queuectl"))


def check_path(value: str) -> str:
    """A path setting must name something: not empty, no NUL, and a leading ``~user`` must be a
    user this machine knows (else every later command would fail expanding it). ValueError if not.
    Plugins pass it as a Setting's ``validate`` (``from queuectl_core.framework.settings import check_path``)."""
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    if value.startswith("~") and os.path.expanduser(value).startswith("~"):
        # os.path.expanduser leaves what it cannot expand as it was (Path.expanduser raises).
        raise ValueError(f"{value.split('/', 1)[0]!r}: no such user (write the path in full)")
    return value


def missing_dirs(directory: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """The nearest directory at or above ``directory`` that is there, and the missing ones below
    it, outermost first. One that cannot be looked at (a directory we may not search) counts as
    there: using it says why."""
    missing: list[str] = []
    d = os.path.abspath(directory)
    while os.path.dirname(d) != d:
        try:
            os.stat(d)
        except FileNotFoundError:
            missing.insert(0, d)
            d = os.path.dirname(d)
            continue
        except OSError:
            pass
        break
    return d, missing


def make_private_dirs(directory: str | os.PathLike[str]) -> list[str]:
    """Create ``directory`` and every missing parent, each 0700 whatever the umask (the home holds
    every job's command and output); existing ones keep their mode. Returns the ones this call
    created, outermost first."""
    made = []
    for d in missing_dirs(directory)[1]:
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # another process made it: its own
        made.append(d)
        os.chmod(d, 0o700)  # mkdir's mode passes through the umask
    return made


def ensure_private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` 0700, or tighten it to 0700 if it exists with group/other bits, as ssh and
    gpg do for their own directories: config.toml may hold a DSN password, and the database every
    job's command. One stat when all is well; a directory we do not own is left as it is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            make_private_dirs(path)
        except OSError as exc:
            raise ConfigError(f"cannot create {os.fspath(path)}: {exc.strerror or exc}") from None
        return
    except OSError as exc:
        raise ConfigError(f"cannot use QUEUECTL_HOME {os.fspath(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"QUEUECTL_HOME {os.fspath(path)} is not a directory")
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        try:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        except OSError:
            pass


def normalize_key(key: str) -> str:
    return key.strip().replace("-", "_").lower()


@dataclass(frozen=True)
class Setting:
    """One config key: its type, default, help and what it accepts."""

    key: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    secret: bool = False
    # A callable default is computed from the home directory (e.g. a path inside it).
    plugin: str = "core"
    validate: Callable[[Any], object] | None = None
    # Seconds per unit for a time span whose key says no unit (``notify.webhook.max_age``).
    unit: float | None = None

    @property
    def duration_unit(self) -> float | None:
        """Seconds per unit when the key is a time span (``*_seconds``, ``*_ms``): its value may
        then be given as a duration such as ``5m`` or ``1h30m``."""
        if self.type not in (int, float):
            return None
        if self.unit is not None:
            return self.unit
        if self.key.endswith("_seconds") or self.key.startswith("retention."):  # retention.*: ages
            return 1.0
        if self.key.endswith("_ms"):
            return 0.001
        return None

    @property
    def env_var(self) -> str:
        return "QUEUECTL_" + self.key.upper().replace(".", "_")

    def shown(self, value: Any) -> Any:
        """The value as it may be printed: a secret masked; a DSN keeps all but its password."""
        if not self.secret or value in (None, ""):
            return value
        import re

        text = str(value)
        if "://" in text:
            from urllib.parse import urlsplit, urlunsplit

            try:
                parts = urlsplit(text)
            except ValueError:
                return "****"
            netloc = parts.netloc
            userinfo, at, host = netloc.rpartition("@")
            if at and ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:****@{host}"
            query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2****", parts.query)
            return urlunsplit(parts._replace(netloc=netloc, query=query))
        if "=" in text:  # a key=value connection string
            return re.sub(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1****", text)
        return "****"

    def text(self, value: Any) -> str:
        """The value as a person reads it (``config set``, ``show``, ``get``): :meth:`shown`, with a
        time span in units as it may be typed (``1d``, ``1h30m``, ``250ms``); JSON keeps the number."""
        value = self.shown(value)
        unit = self.duration_unit
        if unit is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            from queuectl_core.jobs.timeutil import format_duration

            return format_duration(value * unit) if value else "0"
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    def default_for(self, home_dir: Path) -> Any:
        return self.default(home_dir) if callable(self.default) else self.default

    def coerce(self, value: Any) -> Any:
        """Turn text (from the CLI or environment) or a TOML value into this key's type, or raise
        ConfigError naming the key."""
        want = self.type
        if isinstance(value, str):
            if "\x00" in value:
                raise ConfigError(f"{self.key} must not contain NUL bytes")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # config.toml is UTF-8: an argument or variable with invalid bytes cannot be kept.
                raise ConfigError(f"{self.key} is not valid UTF-8 text: {_short(value)}") from None
            if self.type is int and self.key.endswith("_bytes") and value.strip()[-1:].isalpha():
                from queuectl_core.jobs.limits import parse_size  # a size in bytes may be typed 64K, 4M

                try:
                    value = str(parse_size(value))
                except ValueError as exc:
                    raise ConfigError(f"{self.key}: {exc}") from None
            if self.duration_unit is not None and value.strip() and value.strip()[-1:].isalpha() \
                    and value.strip().lower() not in ("nan", "inf", "infinity"):
                from queuectl_core.jobs.timeutil import parse_duration

                try:
                    seconds = parse_duration(value)
                except ValueError as exc:
                    raise ConfigError(f"{self.key}: {exc}") from None
                value = seconds * round(1 / self.duration_unit)
                if want is int:
                    if value != int(value):
                        raise ConfigError(f"{self.key} must be a whole number of {'ms' if self.duration_unit < 1 else 'seconds'}, "
                                          f"got {_short(value)}")
                    value = str(int(value))
        try:
            if want is bool:
                if isinstance(value, bool):
                    out: Any = value
                elif isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                    out = True
                elif isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                    out = False
                else:
                    raise ValueError
            elif want is int:
                if isinstance(value, bool) or isinstance(value, float):
                    raise ValueError
                out = int(value)
            elif want is float:
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
            else:
                if not isinstance(value, str):
                    raise ValueError
                out = value
        except (TypeError, ValueError, OverflowError):
            # ValueError also covers digits beyond Python's int-string conversion limit.
            raise ConfigError(f"{self.key} must be {_type_name(want, self.duration_unit)}, got {_short(value)}") from None
        if self.minimum is not None:
            if out < self.minimum or (self.exclusive_minimum and out == self.minimum):
                op = ">" if self.exclusive_minimum else ">="
                raise ConfigError(f"{self.key} must be {op} {self.minimum:g}, got {_short(value)}")
        if self.maximum is not None and out > self.maximum:
            raise ConfigError(f"{self.key} must be <= {self.maximum:g}, got {_short(value)}")
        if self.choices is not None and out not in self.choices:
            raise ConfigError(f"{self.key} must be one of {', '.join(self.choices)}; got {_short(value)}")
        if self.validate is not None:
            try:
                self.validate(out)
            except ValueError as exc:
                raise ConfigError(f"{self.key}: {exc}") from None
        return out


def _type_name(t: type, duration_unit: float | None = None) -> str:
    if duration_unit is not None:
        return "a number of " + ("ms" if duration_unit < 1 else "seconds") + " or a duration like 5m or 1h30m"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(t, t.__name__)


def _short(value: Any) -> str:
    from queuectl_core.intake.jobspec import short

    return short(value)


CORE_SETTINGS = (
    Setting("max_retries", int, 3, "Retries after the first attempt (a job runs at most N + 1 times).", minimum=0,
            maximum=2**31 - 1),
    Setting("backoff_base", float, 2.0, "Retry delay base: retry k waits backoff_base ** k seconds.",
            minimum=0, exclusive_minimum=True, maximum=86_400),
    Setting("poll_interval_ms", int, 500, "How often an idle worker checks for work without a wake-up.",
            minimum=0, exclusive_minimum=True, maximum=3_600_000),
    # At least a second: a shorter lease expires between heartbeats, so a running job is re-run.
    Setting("lease_seconds", float, 60.0, "A claimed job's lease, renewed by a heartbeat while it runs.",
            minimum=1, maximum=7 * 86_400),
    Setting("worker_slots", int, 1, "Jobs one worker process runs at once (`worker start --slots`).",
            minimum=1, maximum=4096),
    Setting("storage", str, "sqlite", "Which registered storage backend holds the queue."),
    Setting("executor", str, "subprocess", "Which registered executor runs jobs."),
    Setting("backoff", str, "exponential", "Which registered backoff policy spaces retries."),
    # -- scheduling --
    Setting("no_retry_exit_codes", str, "",
            "Exit codes that go straight to the DLQ unless a job says otherwise (e.g. 2,64; empty: none).",
            validate=lambda value: _check_exit_codes(value)),
    # -- retention: applied by running workers, at most once a minute -------------------------
    Setting("retention.completed", float, 7 * 86_400.0,
            "Delete completed jobs (and their logs) this long after they finished; 0 keeps them.",
            minimum=0, maximum=100 * 365 * 86_400),
    Setting("retention.dead", float, 0.0,
            "Delete dead (DLQ) jobs and their logs this long after they died; 0 (default) keeps them.",
            minimum=0, maximum=100 * 365 * 86_400),
    # -- hosts: the name a worker reports (status and the dashboard group workers by it) ----------
    Setting("worker.host", str, lambda home: os.uname().nodename,
            "The host name this machine's workers report (default: the machine's hostname).",
            validate=lambda value: _check_host(value)),
    # -- output kept by the storage: the start and the end of each attempt's output ---------------
    Setting("logs.max_bytes", int, 4 * 1024 * 1024,
            "Most bytes of each attempt's output the storage keeps: the first and last halves; the middle is cut.",
            minimum=1024, maximum=1024 ** 3),
    # -- limits: a job's defaults, after its own and its queue's (queuectl_core.jobs.limits) -------
    Setting("job.memory", str, "", "Memory limit of a job that sets none, nor its queue: SIZE such as 512M or 2G "
            "(empty or 0: none).", validate=lambda value: _check_limit("size", value)),
    Setting("job.cpu_time", str, "", "CPU time limit of a job that sets none, nor its queue: a duration such as "
            "90s or 10m (empty or 0: none).", validate=lambda value: _check_limit("duration", value)),
    # -- needs: what this host's workers have (`worker start --resources` overrides) --------------
    Setting("worker.resources", str, "",
            "This host's resources for jobs' --needs, e.g. 'gpu=0,1 cpu=8' (empty: the GPUs nvidia-smi lists).",
            validate=lambda value: _check_resources(value)),
)


def _check_limit(kind: str, value: str) -> None:
    if value.strip():
        from queuectl_core.jobs.limits import parse_size
        from queuectl_core.jobs.timeutil import parse_duration

        (parse_size if kind == "size" else parse_duration)(value)


def _check_host(value: str) -> None:
    if not value.strip() or len(value) > 255 or not value.isprintable() or value != value.strip():
        raise ValueError("must be 1-255 printable characters, without leading or trailing blanks")


def _check_resources(value: str) -> None:
    if value.strip():
        from queuectl_core.jobs.needs import parse_resources

        try:
            parse_resources(value)
        except Exception as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None


def _check_exit_codes(value: str) -> None:
    if value.strip():
        from queuectl_core.intake.jobspec import parse_exit_codes

        try:
            parse_exit_codes("no_retry_exit_codes", value)
        except Exception as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None


LIBPQ_SECRET_ENV = frozenset({"PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"})


class Config:
    """Resolved configuration: every registered key's effective value and where it came from.

    ``env`` is where ``QUEUECTL_*`` values are read (default: ``os.environ``). A plain class, not a
    dataclass: every command makes it at import, and the dataclass cost ~0.25 ms of start-up."""

    def __init__(self, home: Path, schema: dict[str, Setting], file_values: dict[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.schema = schema
        self.file_values: dict[str, Any] = {} if file_values is None else file_values
        self.env: Mapping[str, str] = os.environ if env is None else env

    def secret_env_vars(self) -> frozenset[str]:
        """Environment variables no command queuectl runs for a user (a job, ``notify.command``)
        may inherit: libpq's password sources and every secret setting's ``QUEUECTL_*``."""
        return LIBPQ_SECRET_ENV | {s.env_var for s in self.schema.values() if s.secret}

    @property
    def path(self) -> Path:
        return self.home / CONFIG_FILE

    def setting(self, key: str) -> Setting:
        norm = normalize_key(key)
        try:
            return self.schema[norm]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(norm, self.schema, n=1, cutoff=0.6)
            if close:
                raise ConfigError(f"unknown config key {_short(key)}; did you mean {close[0]!r}?") from None
            # Every key would make a line of 900 characters: the sections, and where the keys are.
            sections = ", ".join(sorted({k.split(".")[0] + ("." if "." in k else "") for k in self.schema}))
            raise ConfigError(f"unknown config key {_short(key)} (keys: {sections}; `queuectl config show`"
                              " lists every key)") from None

    def source(self, key: str) -> str:
        s = self.setting(key)
        if s.env_var in self.env:
            return f"env {s.env_var}"
        if s.key in self.file_values:
            return "config.toml"
        return "default"

    def get(self, key: str) -> Any:
        s = self.setting(key)
        if s.env_var in self.env:
            try:
                return s.coerce(self.env[s.env_var])
            except ConfigError as exc:
                # Say where the bad value lives: config.toml may be fine and `config set` no help.
                raise ConfigError(f"environment variable {s.env_var}: {exc}") from None
        if s.key in self.file_values:
            return s.coerce(self.file_values[s.key])
        return s.default_for(self.home)

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def keys(self) -> Iterable[str]:
        return sorted(self.schema)


def read_file_values(home_dir: Path) -> dict[str, Any]:
    """config.toml flattened to dotted keys; a missing file is empty, a broken one an error."""
    path = home_dir / CONFIG_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        # It may hold a DSN password: 0600, tightened if an older version or an editor left it open.
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            try:
                os.fchmod(fd, 0o600)
            except OSError:
                pass
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix or remove it") from None
    flat: dict[str, Any] = {}
    _flatten(data, "", flat)
    return flat


def _flatten(data: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for k, v in data.items():
        key = normalize_key(prefix + k)
        if isinstance(v, dict):
            _flatten(v, key + ".", out)
        else:
            out[key] = v


def validate_file_values(values: Mapping[str, Any], schema: Mapping[str, Setting], path: Path) -> None:
    """Known keys must hold valid values; unknown keys (a plugin since removed) are left alone."""
    for key, value in values.items():
        if key in schema:
            try:
                schema[key].coerce(value)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None


def write_file_values(home_dir: Path, values: Mapping[str, Any]) -> None:
    """Write config.toml atomically: a temporary file in the same directory, fsync, rename."""
    import tomli_w

    nested: dict[str, Any] = {}
    for key in sorted(values):
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = values[key]
    text = tomli_w.dumps(nested)
    tomllib.loads(text)  # never write what we could not read back
    ensure_private_dir(home_dir)
    path = home_dir / CONFIG_FILE
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        # A read-only home or a full disk: one line, and the old config.toml is untouched.
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
