"""`queuectl config ...` and `queuectl plugins list`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from queuectl_core.cli.common import QueuectlGroup, _app, _print_json

if TYPE_CHECKING:
    pass


# -- config -------------------------------------------------------------------------------------
@click.group(cls=QueuectlGroup)
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
    from queuectl_core.framework.settings import write_file_values

    app = _app(ctx)
    setting = app.config.setting(key)
    coerced = setting.coerce(value)
    for registry in (app.registries.storages, app.registries.executors, app.registries.backoffs):
        if setting.key == registry.config_key:
            registry.get(coerced)
    values = dict(app.config.file_values)
    values[setting.key] = coerced
    write_file_values(app.home, values)
    click.echo(f"{setting.key} = {setting.text(coerced)}")
    if setting.env_var in app.config.env:
        click.echo(f"note: {setting.env_var} is set and overrides this", err=True)


@config.command("get")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON.")
@click.pass_context
def config_get(ctx: click.Context, key: str, as_json: bool) -> None:
    """Print the effective value of KEY (a secret is masked).

    \b
      queuectl config get max_retries
      queuectl config get retention.completed --json
    """
    cfg = _app(ctx).config
    setting = cfg.setting(key)
    value = setting.shown(cfg.get(setting.key))
    if as_json:
        _print_json(value)
    else:
        click.echo(setting.text(cfg.get(setting.key)))


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

    def text(key: str, value: Any) -> str:
        # Strings quoted (an empty value stays visible); numbers, booleans and spans as typed.
        return repr(value) if isinstance(value, str) else cfg.setting(key).text(value)

    for r in rows:
        extra = "" if r["source"] == "default" else f"  (default {text(r['key'], r['default'])}; from {r['source']})"
        click.echo(f"{r['key']:<{width}} = {text(r['key'], r['value'])}{extra}")


# -- plugins ------------------------------------------------------------------------------------
@click.group(cls=QueuectlGroup)
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Each plugin, its version, the hooks it implements and what it provides."""
    from queuectl_core.framework.plugins import plugin_version, pm

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
