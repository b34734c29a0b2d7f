"""The `switchboard` command line."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Switchboard: a chat-ops bot that fronts supervisor-led teams of LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
teams_app = typer.Typer(help="Team definitions.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(teams_app, name="teams")

TeamsOption = Annotated[
    Path | None,
    typer.Option(
        "--teams",
        help="Teams file (default: $SWITCHBOARD_TEAMS_FILE, else the one `switchboard init` "
        "wrote, else the packaged default).",
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"switchboard: {message}", err=True)
    return typer.Exit(code)


def _say(message: str) -> None:
    typer.echo(f"switchboard: {message}", err=True)


def _use_teams(path: Path | None) -> None:
    """Apply --teams before anything reads the settings, and check the settings."""
    from orchestrator.settings import get_settings

    if path is not None:
        os.environ["SWITCHBOARD_TEAMS_FILE"] = str(path)
    get_settings.cache_clear()
    _settings()


def _settings():  # type: ignore[no-untyped-def]
    """The settings, or exit 2 naming the variable that is wrong."""
    from pydantic import ValidationError

    from orchestrator.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        detail = exc.errors()[0]
        name = ".".join(str(part) for part in detail["loc"]) or "settings"
        raise _fail(f"{name}: {detail['msg']}", 2) from None


def _where(url: str) -> str:
    """Where runs are kept, said once at start."""
    default = "DATABASE_URL" not in os.environ
    note = " (the default; set DATABASE_URL to use another)" if default else ""
    return f"runs are kept in {_safe_url(url)}{note}"


def _wait_for_database(url: str, *, migrate: bool, max_wait_s: float = 30.0) -> None:
    """Wait until the database answers (migrating it when asked), one line per attempt."""
    from bot import outage
    from orchestrator.store.db import get_engine, upgrade

    delay = 1.0
    while True:
        try:
            if migrate:
                upgrade(url)
            else:
                with get_engine(url).connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
            return
        except Exception as exc:
            if not outage.is_database(exc):
                raise _fail(f"cannot prepare the database at {_safe_url(url)}: {exc}") from None
            _say(f"{outage.describe(exc)} at {_safe_url(url)}; trying again in {delay:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, max_wait_s)


def _load_config():  # type: ignore[no-untyped-def]
    from orchestrator.settings import get_settings
    from orchestrator.teams import TeamsFileError, load_teams

    try:
        config = load_teams(get_settings().teams_file)
    except TeamsFileError as exc:
        raise _fail(str(exc), 2) from None
    _warn(config)
    return config


def _warn(config) -> None:  # type: ignore[no-untyped-def]
    """Missing keys and prices, on stderr: before a run fails on them, not after."""
    from orchestrator.llm.checks import config_warnings

    for warning in config_warnings(config):
        typer.echo(f"switchboard: warning: {warning}", err=True)


def _setup_logging(default_level: str, *, json: bool | None = None) -> None:
    from orchestrator.settings import get_settings
    from orchestrator.telemetry.logs import configure_logging

    settings = get_settings()
    level = os.environ.get("LOG_LEVEL", default_level)
    configure_logging(level, json=settings.log_json if json is None else json)


DEMO_REQUEST = "/agent summarise the design of a chat-ops bot that fronts agent teams"


@app.command()
def chat(
    teams: TeamsOption = None,
    user: Annotated[
        str | None, typer.Option(help="Who you are in this session (default: $USER).")
    ] = None,
    wait_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for runs after piped input ends.")
    ] = 600,
    demo: Annotated[bool, typer.Option("--demo", help="Start with an example request.")] = False,
) -> None:
    """Talk to the agent teams from the terminal (the console adapter).

    Reads /agent commands from standard input: an interactive prompt on a terminal, plain
    lines when piped. With no BROKER_URL everything runs in this process (SQLite, an
    in-process queue, the offline scripted model).
    """
    _use_teams(teams)
    _setup_logging("WARNING", json=False)  # stderr stays readable beside the conversation
    config = _load_config()
    from bot.console import ConsoleSession
    from bot.held import HeldSteps
    from bot.stdin import TooLong, line_bound, read_line
    from orchestrator.store.db import upgrade
    from orchestrator.store.repository import Store
    from tasks import runtime
    from tasks.steps import advance

    settings = _settings()
    try:
        upgrade(settings.database_url)
    except Exception as exc:
        raise _fail(
            f"cannot prepare the database at {_safe_url(settings.database_url)}: {exc}"
        ) from None
    _say(_where(settings.database_url))
    embedded = None
    if not settings.broker_url:
        from tasks.inprocess import EmbeddedWorker

        runtime.install(runtime.build(settings))
        embedded = EmbeddedWorker(concurrency=settings.inprocess_concurrency)
        embedded.start()

    def send(run_id: int, version: int) -> None:
        advance.delay(run_id, version)

    # A broker outage holds steps (and says so) instead of ending the session.
    held = HeldSteps(send, lambda text: session.say(text))
    session = ConsoleSession(Store(settings.database_url), config, held, user=user)
    session.start()
    interactive = sys.stdin.isatty()
    # Bytes that are not UTF-8 must reach the command check, not end the session.
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")
    bound = line_bound(settings.max_request_chars)
    if interactive:
        session.say("Switchboard console. Type /agent help for commands, Ctrl-D to leave.")
    if demo:
        session.say(f"switchboard> {DEMO_REQUEST}")
        session.handle(DEMO_REQUEST)
        if interactive:
            session.wait(wait_timeout)
    try:
        while True:
            try:
                line = input("switchboard> ") if interactive else read_line(sys.stdin.buffer, bound)
            except EOFError:
                break
            if line is None:
                break
            if isinstance(line, TooLong):
                session.say(
                    f"error: that line is {line.size:,} bytes long; a request may have "
                    f"{settings.max_request_chars:,} characters. Nothing was done."
                )
                continue
            session.handle(line)
    except KeyboardInterrupt:
        session.say("")
    _finish(session, wait_timeout)
    held.close()
    if embedded is not None:
        embedded.stop()


def _finish(session, wait_timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Wait for the session's runs, say what stays paused, and deliver the last notices."""
    from bot import outage

    if not session.wait(wait_timeout):
        session.say(
            f"Gave up waiting after {wait_timeout:.0f}s; runs continue in the background worker."
        )
    try:
        for run_id in session.waiting_for_approval():
            session.say(
                f"[run {run_id}] is waiting for approval; no more input to answer it, "
                "so it stays paused."
            )
        session.close()
    except Exception as exc:
        session.say(f"(could not deliver the last notices: {outage.describe(exc)})")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


@app.command()
def worker(
    teams: TeamsOption = None,
    concurrency: Annotated[int, typer.Option(help="Step tasks in flight in this process.")] = 200,
    pool: Annotated[
        str, typer.Option(help="Celery pool: threads (default), prefork, solo.")
    ] = "threads",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name, e.g. worker1@%h (default celery@%h).")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Worker processes (default: the CPU cores), each with --concurrency threads "
            "and its own hostname (name-1@host, name-2@host, …).",
        ),
    ] = None,
) -> None:
    """Run Celery workers that execute run steps (needs BROKER_URL).

    Waits for the database with a one-line message per attempt. Exits non-zero whenever it
    stops without being asked to (a lost broker, an unrecoverable error), so that a
    supervisor with `restart: on-failure` brings it back.
    """
    _use_teams(teams)
    _setup_logging(loglevel)
    _load_config()
    settings = _settings()
    if not settings.broker_url:
        raise _fail("BROKER_URL is not set; `switchboard chat` runs an in-process worker by itself")
    _say(_where(settings.database_url))
    _wait_for_database(settings.database_url, migrate=True)
    count = processes or os.cpu_count() or 1
    if count > 1:
        from bot import worker_pool

        args = [f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}"]
        if teams is not None:
            args.append(f"--teams={teams}")
        raise typer.Exit(worker_pool.run(count, args, hostname))
    from celery import signals

    from tasks.app import app as celery_app

    asked = threading.Event()

    def on_shutdown(sig: str | None = None, **_: object) -> None:
        asked.set()  # SIGTERM, SIGINT or SIGQUIT: the operator (or compose) asked

    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    code = celery_app.start(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            *([f"--hostname={hostname}"] if hostname else []),
        ]
    )
    raise typer.Exit(_worker_exit_code(code, asked.is_set()))


def _worker_exit_code(code: object, asked: bool) -> int:
    """Celery's own code, except that an unasked stop is never a success."""
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if status == 0 and not asked:
        _say(
            "the worker stopped without being asked to (lost its broker?); "
            "exiting 1 so that a supervisor restarts it"
        )
        return 1
    return status


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    schedule_file: Annotated[
        Path, typer.Option(help="Where beat keeps its schedule state.")
    ] = Path("/tmp/switchboard-beat-schedule"),
) -> None:
    """Run Celery beat: expires escalations, restarts stalled runs, sweeps the outbox."""
    settings = _settings()
    _setup_logging(loglevel)
    if not settings.broker_url:
        raise _fail("BROKER_URL is not set")
    from tasks.app import app as celery_app

    code = celery_app.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule_file}"])
    raise typer.Exit(code if isinstance(code, int) else 0)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply Alembic migrations to DATABASE_URL."""
    from orchestrator.store.db import upgrade

    url = _settings().database_url
    try:
        upgrade(url, revision)
    except Exception as exc:
        raise _fail(f"migration failed on {_safe_url(url)}: {exc}") from None
    typer.echo(f"database at {_safe_url(url)} is at {revision}")


@teams_app.command("validate")
def teams_validate(
    path: Annotated[Path, typer.Argument(help="The teams YAML file to check.")],
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Also start or reach every MCP server, list its tools and check the tools "
            "workers name; exit 2 naming any server that cannot be reached.",
        ),
    ] = False,
) -> None:
    """Check a teams file; exit 2 with one line naming file, team and field if it is wrong."""
    from orchestrator.teams import TeamsFileError, load_teams

    try:
        config = load_teams(path)
    except TeamsFileError as exc:
        raise _fail(str(exc), 2) from None
    _warn(config)
    typer.echo(f"{path}: ok ({len(config.teams)} teams: {', '.join(config.teams)})")
    if connect:
        _connect_servers(path, config)


def _connect_servers(path: Path, config) -> None:  # type: ignore[no-untyped-def]
    """`teams validate --connect`: one line per MCP server; exit 2 if any is unusable."""
    import logging

    from orchestrator.tools.mcp_tools import check_servers

    if not config.mcp_servers:
        typer.echo(f"{path}: no MCP servers to connect to")
        return
    logging.getLogger("orchestrator.tools").addHandler(logging.NullHandler())  # we report
    named = {
        f"team {team_name!r} worker {worker.name!r}": worker.tools
        for team_name, team in config.teams.items()
        for worker in team.workers
    }
    failed = False
    for check in check_servers(config.mcp_servers, named):
        if check.error is not None:
            failed = True
            typer.echo(
                f"switchboard: {path}: mcp_servers.{check.name}: unavailable: {check.error}",
                err=True,
            )
            continue
        shown = ", ".join(check.tools[:20]) + (", ..." if len(check.tools) > 20 else "")
        typer.echo(f"{path}: mcp server {check.name!r}: ok ({len(check.tools)} tools: {shown})")
        for missing in check.missing:
            failed = True
            typer.echo(
                f"switchboard: {path}: {missing}: MCP server {check.name!r} lists no such tool",
                err=True,
            )
    if failed:
        raise typer.Exit(2)


@teams_app.command("list")
def teams_list(teams: TeamsOption = None) -> None:
    """Show the configured teams."""
    _use_teams(teams)
    config = _load_config()  # before the heavy imports: a bad file is reported at once
    from orchestrator import reports

    typer.echo(reports.teams_text(config))


slack_app = typer.Typer(
    help="Run the Slack bot: Socket Mode with SLACK_APP_TOKEN, else HTTP on --port.",
    invoke_without_command=True,
)
app.add_typer(slack_app, name="slack")


@slack_app.callback()
def slack(
    ctx: typer.Context,
    teams: TeamsOption = None,
    port: Annotated[int, typer.Option(help="HTTP port when not in Socket Mode.")] = 3000,
) -> None:
    """Run the Slack bot: Socket Mode with SLACK_APP_TOKEN, else HTTP on --port.

    `switchboard slack manifest` prints the app manifest to create the Slack app from.
    """
    if ctx.invoked_subcommand is not None:
        return
    _use_teams(teams)
    _setup_logging("INFO")
    _load_config()
    settings = _settings()
    _say(_where(settings.database_url))
    _wait_for_database(settings.database_url, migrate=not settings.broker_url)
    from bot.slack.main import run

    run(port=port)


@slack_app.command("manifest")
def slack_manifest() -> None:
    """Print the Slack app manifest: api.slack.com/apps → Create New App → From a manifest."""
    from importlib.resources import files

    typer.echo(files("bot.slack").joinpath("manifest.yml").read_text(encoding="utf-8"), nl=False)


@app.command()
def alerts(
    teams: TeamsOption = None,
    port: Annotated[int, typer.Option(help="HTTP port Alertmanager's webhook posts to.")] = 9095,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
) -> None:
    """Serve the alert intake: Alertmanager's webhook (POST /alerts) opens a thread per alert
    group and starts its investigation. Needs SWITCHBOARD_ALERTS_TOKEN (bearer) or
    SWITCHBOARD_ALERTS_USERNAME and SWITCHBOARD_ALERTS_PASSWORD (basic auth)."""
    _use_teams(teams)
    _setup_logging("INFO")
    _load_config()
    from bot.alerts.main import run

    run(port=port, host=host)


@app.command()
def discord(teams: TeamsOption = None) -> None:
    """Run the Discord bot (DISCORD_TOKEN; DISCORD_GUILD_ID syncs commands to one guild)."""
    _use_teams(teams)
    _setup_logging("INFO")
    _load_config()
    settings = _settings()
    _say(_where(settings.database_url))
    _wait_for_database(settings.database_url, migrate=True)
    from bot.discord.main import run

    run()


@app.command()
def init(
    path: Annotated[
        Path | None,
        typer.Argument(help="Where to write it (default: the user's config directory)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a teams file to edit, and say what to do next."""
    from orchestrator import defaults
    from orchestrator.settings import default_database_url, user_teams_file

    target = path.absolute() if path is not None else user_teams_file()
    text = defaults.teams_file().read_text(encoding="utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w" if force else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise _fail(f"{target} already exists; edit it, or pass --force to replace it") from None
    except OSError as exc:
        raise _fail(f"cannot write {target}: {exc.strerror or exc}") from None
    found = "" if path is None else f"export SWITCHBOARD_TEAMS_FILE={target}\n     "
    database = os.environ.get("DATABASE_URL") or default_database_url()
    typer.echo(
        f"Wrote {target}.\n\n"
        "Next steps:\n"
        "  1. Edit it: point the tiers at real models (anthropic/..., openai/..., ollama/...)\n"
        "     and set the provider's key (ANTHROPIC_API_KEY, OPENAI_API_KEY, ...); name the\n"
        "     approvers. As written it uses the offline scripted models.\n"
        f"  2. Check it:  switchboard teams validate {target}\n"
        f"  3. Try it:    {found}switchboard chat\n"
        "  4. Slack:     switchboard slack manifest > manifest.yml, create the app from it,\n"
        "                then SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... switchboard slack\n"
        "     Discord:   DISCORD_TOKEN=... switchboard discord\n"
        f"Runs are kept in {_safe_url(database)}.\n"
        "For the production stack set DATABASE_URL and BROKER_URL and run switchboard worker\n"
        "and switchboard beat beside the bots."
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
