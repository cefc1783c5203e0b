"""`spoolmail`: the relay daemon and the operator's commands (click)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable

import click

from spoolmail import __version__, sysexits
from spoolmail import config as config_mod
from spoolmail.admin import actions, health, queueview
from spoolmail.config import Config
from spoolmail.relay.queue import QueueStore

CONFIG_HELP = "configuration file (default: $SPOOLMAIL_CONFIG or /etc/spoolmail/spoolmail.toml)"


def _fail(message: str, code: int) -> click.exceptions.Exit:
    click.echo(f"spoolmail: {message}", err=True)
    return click.exceptions.Exit(code)


def _load(ctx: click.Context) -> Config:
    try:
        return config_mod.load(ctx.obj)
    except config_mod.ConfigError as exc:
        raise _fail(str(exc), sysexits.EX_CONFIG) from None


def _readable_queue(cfg: Config) -> QueueStore:
    if not os.path.isdir(cfg.queue_dir) and os.access(cfg.spool, os.X_OK):
        raise _fail(f"there is no queue in {cfg.spool} yet: has the relay ever run there?",
                    sysexits.EX_NOINPUT)
    if not os.access(cfg.queue_dir, os.R_OK | os.X_OK):
        raise _fail(f"cannot read the queue in {cfg.queue_dir}: run this as root or as the "
                    "relay's user", sysexits.EX_NOPERM)
    return QueueStore(cfg.queue_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", metavar="FILE", help=CONFIG_HELP)
@click.version_option(__version__, prog_name="spoolmail")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """spoolmail: a spool-only sendmail and its sandboxed relay."""
    ctx.obj = config_file


@cli.command()
@click.option("--config", "config_file", metavar="FILE", help=CONFIG_HELP)
@click.option("--once", is_flag=True, help="process incoming/ and every due message, then exit")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def relay(ctx: click.Context, config_file: str | None, once: bool, verbose: bool) -> None:
    """Run the relay daemon in the foreground (systemd: Type=notify)."""
    from spoolmail import logsetup
    from spoolmail.relay import daemon

    logsetup.setup(verbose)
    try:
        code = daemon.run(config_file or ctx.obj, once)
    except config_mod.ConfigError as exc:
        raise _fail(str(exc), sysexits.EX_CONFIG) from None
    except daemon.AlreadyRunning as exc:
        raise _fail(str(exc), sysexits.EX_TEMPFAIL) from None
    raise click.exceptions.Exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def queue(ctx: click.Context, as_json: bool) -> None:
    """List queued messages (also `mailq` and `sendmail -bp`)."""
    cfg = _load(ctx)
    items = queueview.entries(_readable_queue(cfg))
    click.echo(queueview.as_json(items) if as_json else queueview.format_text(items))


@cli.command()
@click.argument("queue_id")
@click.option("--body", is_flag=True, help="print the whole message, not only its header")
@click.pass_context
def show(ctx: click.Context, queue_id: str, body: bool) -> None:
    """Show one message: envelope, state, header (or --body)."""
    cfg = _load(ctx)
    store = _readable_queue(cfg)
    if "/" in queue_id or not store.exists(queue_id):
        raise _fail(f"{queue_id}: no such message in the queue", sysexits.EX_NOINPUT)
    click.echo(queueview.show(store, queue_id, body))


def _each(ctx: click.Context, ids: tuple[str, ...], action: Callable[[Config, str], None],
          done: str) -> None:
    cfg = _load(ctx)
    _readable_queue(cfg)
    code = 0
    for queue_id in ids:
        if "/" in queue_id:
            click.echo(f"spoolmail: {queue_id}: not a queue id", err=True)
            code = max(code, sysexits.EX_USAGE)
            continue
        try:
            action(cfg, queue_id)
        except actions.ActionError as exc:
            click.echo(f"spoolmail: {exc}", err=True)
            code = max(code, exc.code)
        else:
            click.echo(f"{queue_id}: {done}")
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.argument("ids", nargs=-1)
@click.pass_context
def flush(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Retry now: the given messages, or every deferred message."""
    if ids:
        _each(ctx, ids, actions.flush, "will be retried now")
        return
    cfg = _load(ctx)
    try:
        actions.flush_all(cfg)
    except OSError as exc:
        raise _fail(f"cannot ask the relay to flush: {exc.strerror}",
                    sysexits.EX_CANTCREAT) from None
    click.echo("the relay will retry every deferred message now")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def hold(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Keep messages in the queue without trying them."""
    _each(ctx, ids, actions.hold, "held")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def release(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Release held messages; they are tried at once."""
    _each(ctx, ids, actions.release, "released")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def delete(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Delete messages from the queue without a bounce (logged with your name)."""
    _each(ctx, ids, actions.delete, "deleted")


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_context
def bounce(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Return messages to their senders now, with a DSN."""
    _each(ctx, ids, actions.bounce, "will be returned to its sender")


@cli.group()
def quarantine() -> None:
    """Files the relay refused to pick up (symlinks, garbage, oversized…)."""


@quarantine.command("list")
@click.pass_context
def quarantine_list(ctx: click.Context) -> None:
    """List quarantined files with the reason."""
    cfg = _load(ctx.find_root())
    items = _quarantine_items(cfg)
    if not items:
        click.echo("quarantine is empty")
    for item in items:
        stamp = item.get("time", 0)
        when = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.localtime(stamp if isinstance(stamp, float | int) else 0))
        click.echo(f"{item['qid']}  {when}  uid {item.get('uid')}  {item.get('reason')}")


def _quarantine_items(cfg: Config) -> list[dict[str, object]]:
    try:
        return actions.quarantined(cfg)
    except PermissionError:
        raise _fail(f"cannot read {cfg.quarantine_dir}: run this as root or as the relay's "
                    "user", sysexits.EX_NOPERM) from None
    except FileNotFoundError:
        return []


def _quarantine_action(ctx: click.Context, qids: tuple[str, ...],
                       action: Callable[[Config, str], None], done: str) -> None:
    cfg = _load(ctx.find_root())
    code = 0
    for qid in qids:
        try:
            action(cfg, qid)
            click.echo(f"{qid}: {done}")
        except actions.ActionError as exc:
            click.echo(f"spoolmail: {exc}", err=True)
            code = max(code, exc.code)
        except OSError as exc:
            click.echo(f"spoolmail: {qid}: {exc.strerror}", err=True)
            code = max(code, sysexits.EX_CANTCREAT)
    if code:
        raise click.exceptions.Exit(code)


@quarantine.command("show")
@click.argument("qid")
@click.pass_context
def quarantine_show(ctx: click.Context, qid: str) -> None:
    """Print a quarantined file (the first 64 KiB)."""
    cfg = _load(ctx.find_root())
    try:
        data = actions.quarantine_show(cfg, qid)
    except actions.ActionError as exc:
        raise _fail(str(exc), sysexits.EX_NOINPUT) from None
    click.echo(data.decode("utf-8", "replace"))


@quarantine.command("release")
@click.argument("qids", nargs=-1, required=True)
@click.pass_context
def quarantine_release(ctx: click.Context, qids: tuple[str, ...]) -> None:
    """Put quarantined files back into incoming/ for another pickup."""
    _quarantine_action(ctx, qids, actions.quarantine_release, "released to incoming/")


@quarantine.command("delete")
@click.argument("qids", nargs=-1, required=True)
@click.pass_context
def quarantine_delete(ctx: click.Context, qids: tuple[str, ...]) -> None:
    """Delete quarantined files."""
    _quarantine_action(ctx, qids, actions.quarantine_delete, "deleted")


@cli.command()
@click.option("--warn-age", default="1h", show_default=True, help="oldest message age to warn at")
@click.option("--crit-age", default="1d", show_default=True, help="oldest message age to alert at")
@click.pass_context
def status(ctx: click.Context, warn_age: str, crit_age: str) -> None:
    """Relay state, queue counts, quarantine, free space (exit 0 ok, 1 warning, 2 critical)."""
    cfg = _load(ctx)
    warn, crit = config_mod.parse_duration(warn_age), config_mod.parse_duration(crit_age)
    if warn is None or crit is None:
        raise _fail("--warn-age/--crit-age take durations such as 30m, 2h, 1d", sysexits.EX_USAGE)
    try:
        report = health.check(cfg, warn, crit)
    except PermissionError:
        raise _fail(f"cannot read {cfg.status_file}: run this as root, as the relay's user or "
                    "as a member of its group", sysexits.EX_NOPERM) from None
    click.echo(f"spoolmail {health.LABEL[report.level]}"
               + (f": {'; '.join(report.problems)}" if report.problems else ""))
    for line in report.lines:
        click.echo(f"  {line}")
    raise click.exceptions.Exit(report.level)


@cli.command("check-config")
@click.argument("file", required=False)
@click.pass_context
def check_config(ctx: click.Context, file: str | None) -> None:
    """Validate the configuration and print the effective settings (secrets masked)."""
    try:
        cfg = config_mod.load(file or ctx.obj)
    except config_mod.ConfigError as exc:
        raise _fail(str(exc), sysexits.EX_CONFIG) from None
    click.echo(f"# effective configuration from {cfg.source or '(built-in defaults)'}")
    for key, value in dataclasses.asdict(cfg).items():
        if key in ("source", "smtp"):
            continue
        click.echo(f"{key} = {value!r}")
    for key, value in dataclasses.asdict(cfg.smtp).items():
        if key == "password_file" and value:
            value = f"{value} (content not shown)"
        click.echo(f"smtp.{key} = {value!r}")
    password = "set" if cfg.smtp.username and cfg.smtp.password() else "not set"
    click.echo(f"# smtp password: {password}")


@cli.command("send-test")
@click.argument("recipient")
@click.option("--wait", "wait_seconds", type=float, default=0.0,
              help="wait up to this many seconds for the relay to take the message")
@click.pass_context
def send_test(ctx: click.Context, recipient: str, wait_seconds: float) -> None:
    """Submit a test message through the front (optionally wait for its fate)."""
    cfg = _load(ctx)
    front = os.path.join(os.path.dirname(sys.argv[0]), "spoolmail-sendmail")
    command = [front] if os.path.exists(front) else [sys.executable, "-m",
                                                     "spoolmail.sendmail.main"]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    message = (f"To: {recipient}\nSubject: spoolmail test message {stamp}\n\n"
               f"This is a test message sent with 'spoolmail send-test'.\n").encode()
    env = dict(os.environ)
    if ctx.obj:
        env["SPOOLMAIL_CONFIG"] = ctx.obj
    proc = subprocess.run([*command, "-v", "-i", "--", recipient], input=message,
                          capture_output=True, env=env, check=False)
    sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
    if proc.returncode != 0:
        raise click.exceptions.Exit(proc.returncode)
    queue_id = proc.stderr.decode().rsplit("queued as ", 1)[-1].strip()
    click.echo(f"submitted as {queue_id}")
    if wait_seconds > 0:
        raise click.exceptions.Exit(_wait_for(cfg, queue_id, wait_seconds))


def _wait_for(cfg: Config, queue_id: str, seconds: float) -> int:
    store = QueueStore(cfg.queue_dir)
    incoming = os.path.join(cfg.incoming, queue_id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not os.path.exists(incoming):
            try:
                entry = store.load(queue_id)
            except FileNotFoundError:
                click.echo(f"{queue_id}: delivered (it has left the queue)")
                return 0
            except PermissionError:
                click.echo(f"{queue_id}: picked up by the relay")
                return 0
            if entry.attempts:
                click.echo(f"{queue_id}: deferred: {entry.last_error}")
                return sysexits.EX_TEMPFAIL
        time.sleep(0.2)
    click.echo(f"{queue_id}: still waiting after {seconds:g}s (is the relay running?)")
    return sysexits.EX_TEMPFAIL


@cli.command("enable-for")
@click.argument("unit")
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help="act on the system installed under DIR")
def enable_for(unit: str, root: str) -> None:
    """Let UNIT send mail through spoolmail: write its client drop-in."""
    from spoolmail import dropin

    try:
        lines = dropin.enable_for(unit, root=root)
    except dropin.DropinError as exc:
        raise _fail(str(exc), sysexits.EX_CONFIG) from None
    except OSError as exc:
        raise _fail(f"cannot write the drop-in: {exc.strerror}", sysexits.EX_CANTCREAT) from None
    for line in lines:
        click.echo(line)


@cli.command("disable-for")
@click.argument("unit")
@click.option("--root", default="/", show_default=True, metavar="DIR",
              help="act on the system installed under DIR")
def disable_for(unit: str, root: str) -> None:
    """Remove UNIT's spoolmail client drop-in."""
    from spoolmail import dropin

    try:
        lines = dropin.disable_for(unit, root=root)
    except dropin.DropinError as exc:
        raise _fail(str(exc), sysexits.EX_USAGE) from None
    for line in lines:
        click.echo(line)


def main(args: list[str] | None = None) -> int:
    try:
        result = cli.main(args=args, prog_name="spoolmail", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return sysexits.EX_USAGE
    except click.exceptions.Abort:
        return sysexits.EX_TEMPFAIL
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
