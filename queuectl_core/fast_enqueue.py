"""`queuectl enqueue` without click, pluggy or plugin discovery: the common forms, from the
start-up index (queuectl_core.startup_index) that the last full `enqueue` recorded.

It builds the job with the click command's own helpers (queuectl_core.enqueue_input), validates
it with jobspec, stores it with the configured storage's own ``enqueue`` and hands the ENQUEUED
event to every ``queuectl_job_event`` implementation, in pluggy's order. Whatever it does not
fully understand returns None before anything is read or written, and the click command runs
instead: --help, --file, an unknown or misspelt option, a usage error, no (or a stale) index,
QUEUECTL_DISABLE_PLUGINS or QUEUECTL_TRACE_PLUGINS, a QUEUECTL_* value not validated by a full
start, a storage the index does not know, a plugin module that fails to import.
"""

from __future__ import annotations

import atexit
import os
import sys
from types import MappingProxyType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see queuectl_core/__init__.py)

if TYPE_CHECKING:
    from typing import Any

    from queuectl_core.interfaces import Storage

# The click command's options that take a value (queuectl_core.cli.enqueue); --file is the bulk
# path and --help prints help: both go to click.
_VALUE = {"--id": "job_id", "--cmd": "command", "--max-retries": "max_retries", "--priority": "priority",
          "--delay": "delay", "--run-at": "run_at", "--timeout": "timeout", "--queue": "queue",
          "--after": "after", "--unique-key": "unique_key", "--retry-on": "retry_on",
          "--no-retry-on": "no_retry_on", "--cwd": "cwd"}
_MULTIPLE = {"--env": "env", "--tag": "tags"}
_INT = ("max_retries", "priority")


def parse(args: list[str]) -> dict[str, Any] | None:
    """The enqueue command's parameters, as click would pass them, or None for anything click
    should see itself (including every usage error, so its message stays click's)."""
    params: dict[str, Any] = {"env": [], "tags": []}
    positional: list[str] = []
    only_positional = False
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if only_positional or not arg.startswith("-"):
            positional.append(arg)
            continue
        if arg == "--":
            only_positional = True
            continue
        name, eq, value = arg.partition("=")
        key = _VALUE.get(name) or _MULTIPLE.get(name)
        if key is None:
            return None
        if not eq:
            if i >= len(args):
                return None
            value = args[i]
            i += 1
            if value.startswith("-") and not (key in _INT and value[1:].isdigit()):
                return None  # `--cmd --oops`: whatever click makes of it, it says so itself
        if name in _MULTIPLE:
            params[key].append(value)
        elif key in _INT:
            try:
                params[key] = int(value)  # click's INT type is int()
            except ValueError:
                return None
        else:
            params[key] = value
    if len(positional) > 1:
        return None
    params["job_json"] = positional[0] if positional else None
    cwd = params.get("cwd")
    if cwd is not None:
        import stat

        try:
            if stat.S_ISREG(os.stat(cwd).st_mode):
                return None  # click.Path(file_okay=False) refuses it, in its own words
        except (OSError, ValueError):
            pass
    return params


def run(argv: list[str], *, exit_now: bool = False) -> int | None:
    """Enqueue from argv (without the program name); the exit status, or None: use click. With
    ``exit_now`` (the ``queuectl`` executable) the process may end here instead (_exit_now)."""
    if not argv or argv[0] != "enqueue":
        return None
    params = parse(argv[1:])
    if params is None:
        return None
    from queuectl_core.enqueue_input import flag_job

    job_json, cwd, env, tags = params.pop("job_json"), params.pop("cwd", None), params.pop("env"), params.pop("tags")
    given = flag_job(**params)
    if (job_json is not None) + bool(given) != 1 or (given and "command" not in given) \
            or ("delay" in given and "run_at" in given):
        return None  # a usage error: click words it
    prepared = _prepare()
    if prepared is None:
        return None
    config, storage_factory, event_impls, own_code_only = prepared
    status = _enqueue(config, storage_factory, event_impls, given, job_json, cwd, env, tags)
    if exit_now and status is not None and own_code_only:
        _exit_now(status)
    return status


def _exit_now(status: int) -> None:
    """End the process at once, with the storage closed and the output flushed, skipping the
    interpreter's teardown: 4-6 ms of a 35-50 ms enqueue (farm-bench; docs/operations.md,
    "Start-up"). Only after nothing but queuectl's own code ran (its bundled storage and event
    plugins), so no plugin's buffered file or finaliser is skipped, and only when nothing else
    waits for the end either: no atexit handler (a sitecustomize's, coverage's), no profiler or
    tracer (``python -m cProfile`` writes its output at exit). Returns otherwise, and when the
    output cannot be flushed, for the interpreter to end as it would."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if getattr(atexit, "_ncallbacks", lambda: 1)() != 0:  # CPython's count; elsewhere, assume some
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


def _enqueue(config: Any, storage_factory: Any, event_impls: list[tuple[str, Any]], given: dict[str, Any],
             job_json: Any, cwd: str | None, env: list[str], tags: list[str]) -> int | None:
    from queuectl_core.errors import QueuectlError

    storage: Storage | None = None
    try:
        from queuectl_core import jobspec
        from queuectl_core.enqueue_input import (
            enqueue_with_fresh_ids,
            flag_times,
            parse_job_argument,
            with_control_defaults,
        )
        if given:
            given.update(flag_times(given))
            objs = [given]
        else:
            objs = [parse_job_argument(job_json)]
        objs = with_control_defaults(objs, cwd, tuple(env), tuple(tags))
        no_retry = jobspec.configured_no_retry(config["no_retry_exit_codes"])
        jobs = jobspec.validate_all(objs, config["max_retries"], no_retry)
        try:
            storage = storage_factory(config)
        except QueuectlError:
            raise
        except Exception:
            return None  # the full path reports a raising factory, naming its plugin
        created = enqueue_with_fresh_ids(storage, jobs, {o.get("id") for o in objs if isinstance(o, dict)})
        from queuectl_core.event_calls import broadcast
        from queuectl_core.models import EventKind, JobEvent

        for job in created:
            broadcast(event_impls, JobEvent(EventKind.ENQUEUED, job=job, config=config))
        try:
            if sys.stdout is not None:  # started with stdout closed: click.echo prints nothing either
                sys.stdout.write("\n".join(job.id for job in created) + "\n")
                sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)  # as the click command: quietly, status 1
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        return 0
    except QueuectlError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    finally:
        if storage is not None:
            storage.close()


def _prepare() -> tuple[Any, Any, list[tuple[str, Any]], bool] | None:
    """The config, the storage factory and the event implementations the index records, and
    whether all of them (and the settings hooks called) are queuectl's own bundled plugins; or None
    when the index cannot be trusted for this process. Reads, never writes.

    With only queuectl's own plugins reading the config, no QUEUECTL_* value set for a key they
    read and the home spelt as when the index was written, the config is the values the index
    recorded (a read-only mapping: those plugins only read ``config[key]``), and neither the
    settings schema nor pathlib is loaded: ~13 % of the process (docs/operations.md, "The
    click-free `queuectl enqueue`", fifth pass). Otherwise it is a ``Config`` of the keys this
    enqueue can read, as a full start would resolve them."""
    from queuectl_core import startup_index
    from queuectl_core.errors import QueuectlError
    from queuectl_core.homedir import ensure_private_dir, home_text

    if any(name in os.environ for name in startup_index.PLUGIN_ENV):
        return None
    try:
        home_dir = home_text()
        ensure_private_dir(home_dir)
    except QueuectlError:
        return None
    index = startup_index.load(home_dir)
    if index is None:
        return None
    setting_env: dict[str, str] = index["setting_env"]
    present = [var for var in setting_env if var in os.environ]
    if present:
        salt = bytes.fromhex(index["salt"])
        ok = set(index["env_ok"])
        if any(startup_index.env_digest(salt, var, os.environ[var]) not in ok for var in present):
            return None  # validated by a full start only: it says what is wrong with it
    recorded = index.get("values")
    if recorded is not None and recorded["home"] != home_dir:
        recorded = None  # recorded for another spelling of QUEUECTL_HOME: a default may be a path in it
    # The plugins (or "core") whose keys the QUEUECTL_* values set are for.
    overridden = {recorded["plugin"].get(setting_env[var], "core") for var in present} if recorded else set()
    if recorded is not None and "core" not in overridden:
        storage_name = recorded["by_key"]["storage"]
    else:
        try:
            storage_name = _config(home_dir, index, {}).get("storage")
        except QueuectlError:
            return None
    storage = index["storages"].get(storage_name)
    if storage is None:
        return None
    try:
        event_impls = [(impl["plugin"], startup_index.resolve(impl["function"])) for impl in index["job_event"]]
        factory: Any = None
        if storage_name == "postgres":
            try:  # the light libpq client, when installed; psycopg's import alone costs ~115 ms
                # By name: mypy sees the installed package as untyped or missing, depending on the install.
                factory = startup_index.import_module("queuectl_plugins.postgres_lite").lite_storage
            except ImportError:
                pass
        if factory is None:
            factory = startup_index.resolve(storage["factory"])
        # The settings hooks of the plugins this enqueue can read the keys of: core's, the storage
        # plugin's and the event plugins'.
        readers = {storage["plugin"]} | {plugin for plugin, _ in event_impls}
        hooks = [impl for impl in index["settings_hooks"] if impl["plugin"] in readers]
        refs = [storage["factory"]] + [impl["function"] for impl in index["job_event"] + hooks]
        # queuectl_plugins is a regular package that only queuectl's own distribution installs into.
        own_code_only = all(ref.startswith("queuectl_plugins.") for ref in refs)
        if own_code_only and recorded is not None and not overridden & (readers | {"core"}):
            return MappingProxyType(recorded["by_key"]), factory, event_impls, True
        config = _config(home_dir, index, {impl["plugin"]: startup_index.resolve(impl["function"]) for impl in hooks})
    except Exception:  # a plugin that no longer imports: the full start reports it
        return None
    return config, factory, event_impls, own_code_only


def _config(home_dir: str, index: dict[str, Any], hooks: dict[str, Any]) -> Any:
    """A ``Config`` of core's keys and those the given ``queuectl_register_settings`` hooks (by
    plugin name) register, with config.toml's values as the index recorded them. Their values were
    validated by the full start that wrote the index (config.toml as it is now, each QUEUECTL_*
    value by digest), so ``validate`` is not run again: it may be costly (the DSN check imports
    psycopg). Types, ranges and choices still are."""
    from dataclasses import replace
    from pathlib import Path

    from queuectl_core.settings import CORE_SETTINGS, Config, Setting, normalize_key

    schema: dict[str, Setting] = {}

    def registrar(plugin: str) -> Any:
        def register(setting: Setting) -> None:
            key = normalize_key(setting.key)
            schema[key] = replace(setting, key=key, plugin=plugin, validate=None)

        return register

    argnames = {impl["plugin"]: impl["argnames"] for impl in index["settings_hooks"]}
    for plugin, hook in hooks.items():
        hook(**({"register": registrar(plugin)} if "register" in argnames[plugin] else {}))
    for s in CORE_SETTINGS:
        schema[s.key] = replace(s, validate=None)
    return Config(Path(home_dir), schema, index["file_values"])
