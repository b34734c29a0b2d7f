"""The `switchboard` command line."""

from __future__ import annotations

import os
import sys
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
        "--teams", help="Teams file (default: $SWITCHBOARD_TEAMS_FILE or teams/default.yaml)."
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"switchboard: {message}", err=True)
    return typer.Exit(code)


def _use_teams(path: Path | None) -> None:
    """Apply --teams before anything reads the settings."""
    from orchestrator.settings import get_settings

    if path is not None:
        os.environ["SWITCHBOARD_TEAMS_FILE"] = str(path)
    get_settings.cache_clear()


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
    from orchestrator.settings import get_settings
    from orchestrator.store.db import upgrade
    from orchestrator.store.repository import Store
    from tasks import runtime
    from tasks.steps import advance

    settings = get_settings()
    try:
        upgrade(settings.database_url)
    except Exception as exc:
        raise _fail(
            f"cannot prepare the database at {_safe_url(settings.database_url)}: {exc}"
        ) from None
    embedded = None
    if not settings.broker_url:
        from tasks.inprocess import EmbeddedWorker

        runtime.install(runtime.build(settings))
        embedded = EmbeddedWorker(concurrency=settings.inprocess_concurrency)
        embedded.start()

    def enqueue(run_id: int, version: int) -> None:
        advance.delay(run_id, version)

    session = ConsoleSession(Store(settings.database_url), config, enqueue, user=user)
    session.start()
    interactive = sys.stdin.isatty()
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
                line = input("switchboard> ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            if not interactive and line == "":
                break
            session.handle(line)
    except KeyboardInterrupt:
        session.say("")
    if not session.wait(wait_timeout):
        session.say(
            f"Gave up waiting after {wait_timeout:.0f}s; runs continue in the background worker."
        )
    for run_id in session.waiting_for_approval():
        session.say(
            f"[run {run_id}] is waiting for approval; no more input to answer it, "
            "so it stays paused."
        )
    session.close()
    if embedded is not None:
        embedded.stop()


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
) -> None:
    """Run a Celery worker that executes run steps (needs BROKER_URL)."""
    _use_teams(teams)
    _setup_logging(loglevel)
    _load_config()
    from orchestrator.settings import get_settings
    from orchestrator.store.db import upgrade

    settings = get_settings()
    if not settings.broker_url:
        raise _fail("BROKER_URL is not set; `switchboard chat` runs an in-process worker by itself")
    upgrade(settings.database_url)
    from tasks.app import app as celery_app

    celery_app.worker_main(
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


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    schedule_file: Annotated[
        Path, typer.Option(help="Where beat keeps its schedule state.")
    ] = Path("/tmp/switchboard-beat-schedule"),
) -> None:
    """Run Celery beat: expires escalations, restarts stalled runs, sweeps the outbox."""
    _setup_logging(loglevel)
    from orchestrator.settings import get_settings

    if not get_settings().broker_url:
        raise _fail("BROKER_URL is not set")
    from tasks.app import app as celery_app

    celery_app.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule_file}"])


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply Alembic migrations to DATABASE_URL."""
    from orchestrator.settings import get_settings
    from orchestrator.store.db import upgrade

    url = get_settings().database_url
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
    from orchestrator import reports

    typer.echo(reports.teams_text(_load_config()))


@app.command()
def slack(
    teams: TeamsOption = None,
    port: Annotated[int, typer.Option(help="HTTP port when not in Socket Mode.")] = 3000,
) -> None:
    """Run the Slack bot: Socket Mode with SLACK_APP_TOKEN, else HTTP on --port."""
    _use_teams(teams)
    _setup_logging("INFO")
    _load_config()
    from bot.slack.main import run

    run(port=port)


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
    from bot.discord.main import run

    run()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
