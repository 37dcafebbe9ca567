"""``codebase-mcp``: serve the MCP server, run migrations, and use the tools from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pika import exceptions as pika_errors
from pydantic import BaseModel

from actors.messages import EMBED_QUEUE
from models.lifecycle import TERMINAL_STATUSES
from models.logs import configure_logging
from models.settings import Settings, get_settings
from server.errors import CallerError, outage_message


def _emit(result: BaseModel, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        print(json.dumps(result.model_dump(), indent=2))
    else:
        render(result)


def _with_service(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    from server.service import IndexingService

    async def run() -> int:
        async with IndexingService.open(settings) as service:
            return await work(service)

    try:
        return asyncio.run(run())
    except CallerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        message = outage_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _queue_consumers(broker_url: str, queue: str) -> int:
    from server.metrics import queue_stats

    return queue_stats(broker_url, [queue]).get(queue, (0, 0))[1]


def _spawn_workers(processes: int, threads: int) -> subprocess.Popen[bytes]:
    """Local workers for one ``index`` run; their output goes to a log file, the terminal shows progress."""
    from server.supervisor import spawn_workers

    log = Path(tempfile.mkdtemp(prefix="codebase-mcp-workers-")) / "workers.log"
    print(f"no workers are attached to RabbitMQ: starting local workers for this run (log: {log})", file=sys.stderr)
    return spawn_workers(processes, threads, log)


def _render_status(status: Any) -> None:
    print(f"job {status.job_id}  {status.status}  {status.progress_percentage}%  {status.progress_message}")
    print(
        f"  files: {status.files_indexed} indexed, {status.files_skipped} skipped, {status.files_failed} failed"
        f" of {status.files_total if status.files_total is not None else '?'}; chunks: {status.chunks_created}"
    )
    timings = [f"created {status.created_at}"]
    for label in ("started_at", "completed_at", "cancelled_at", "failed_at"):
        value = getattr(status, label)
        if value:
            timings.append(f"{label.removesuffix('_at')} {value}")
    print("  " + ", ".join(timings))
    if status.error_message:
        print(f"  error: {status.error_message}")


#: Pygments lexer names where ours differ.
_LEXERS = {"objc": "objective-c", "shell": "bash", "dockerfile": "docker", "gradle": "groovy", "svelte": "html"}


def _render_search(result: Any) -> None:
    """Hits with their location and ranks, and the snippet syntax-highlighted in its language."""
    from rich.console import Console
    from rich.syntax import Syntax

    console = Console(highlight=False)
    if result.message:
        console.print(result.message, style="yellow")
    for rank, hit in enumerate(result.results, 1):
        symbol = f"  [{hit.symbol}]" if hit.symbol else ""
        ranks = ", ".join(
            f"{name} #{value}"
            for name, value in (("vector", hit.vector_rank), ("text", hit.text_rank))
            if value is not None
        )
        console.print(
            f"[bold]{rank:>2}.[/bold] [cyan]{hit.repository}[/cyan]:[green]{hit.file_path}[/green]"
            f":{hit.start_line}-{hit.end_line}{symbol}  [dim]{hit.language}  score {hit.score:.4f}"
            f"{'  (' + ranks + ')' if ranks else ''}[/dim]"
            f"{'  [yellow]stale: changed on disk since indexed[/yellow]' if hit.stale else ''}",
            markup=True,
        )
        console.print(
            Syntax(
                hit.snippet,
                _LEXERS.get(hit.language, hit.language),
                line_numbers=True,
                start_line=hit.start_line,
                word_wrap=True,
            )
        )


def _render_repositories(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    if not result.repositories:
        print("nothing is indexed yet: codebase-mcp index PATH")
        return
    table = Table("name", "path", "files", "chunks", "languages", "last indexed", "embedder", "active job", "watched")
    for repo in result.repositories:
        table.add_row(
            repo.name,
            repo.path,
            str(repo.files),
            str(repo.chunks),
            ", ".join(repo.languages),
            repo.last_indexed_at or "never",
            f"{repo.embedder} ({repo.dimension})" if repo.embedder else "-",
            f"{repo.active_job_status} {repo.active_job_id}" if repo.active_job_id else "-",
            _watch_cell(repo),
        )
    Console().print(table)


def _watch_cell(repo: Any) -> str:
    if not repo.watched:
        return "-"
    if repo.watch_error:
        return f"yes, stuck: {repo.watch_error}"
    return f"yes, caught up {repo.watch_caught_up_at}" if repo.watch_caught_up_at else "yes, catching up"


def _progress_line(status: Any) -> str:
    """The plain-text progress line (logs, pipes): what the rich bar shows, without redrawing."""
    width = 30
    filled = width * status.progress_percentage // 100
    bar = "#" * filled + "-" * (width - filled)
    return f"[{bar}] {status.progress_percentage:>3}% {status.phase:<9} {_rate(status)}  ETA {_eta(status)}"


def _rate(status: Any) -> str:
    return f"{status.files_per_second:.1f} files/s" if status.files_per_second else "-- files/s"


def _eta(status: Any) -> str:
    if status.eta_seconds is None:
        return "--"
    minutes, seconds = divmod(int(status.eta_seconds), 60)
    return f"{minutes}:{seconds:02d}"


def _files(status: Any) -> str:
    done = status.files_indexed + status.files_failed
    total = f"{status.files_total:,}" if status.files_total is not None else "?"
    return f"{done:,}/{total} files"


class _Display:
    """A rich progress bar on a terminal (phase, bar, percent, files, files/s, ETA); plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = False
        self._last = ""
        if quiet:  # shows nothing: rich (~0.1 CPU-s of imports) is not needed
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<9}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("job", total=100, phase="queued", files="", rate="", eta="--")

    def __enter__(self) -> _Display:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.live:
            self._progress.stop()

    def update(self, status: Any) -> None:
        if self.live:
            self._progress.update(
                self._task,
                completed=status.progress_percentage,
                phase=status.phase,
                files=_files(status),
                rate=_rate(status),
                eta=_eta(status),
            )
        elif not self.quiet:
            line = _progress_line(status)
            if line != self._last:
                print(line, file=sys.stderr, flush=True)
                self._last = line


async def _follow(service: Any, job_id: str, quiet: bool) -> Any | None:
    """Show the job's progress until it ends; None when the user pressed Ctrl-C first.

    SIGINT is taken over while following, so Ctrl-C only stops the watching: the job itself runs
    on the workers and is not touched (the caller decides whether to cancel it).
    """
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        with _Display(quiet) as display:
            while True:
                status = await service.status(job_id)
                display.update(status)
                if status.status in TERMINAL_STATUSES:
                    return status
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(interrupted.wait(), timeout=1.0)
                if interrupted.is_set():
                    return None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


async def _keep_watching(service: Any, repo_path: str, last_job: str) -> int:
    """``index --watch``: run the repository's watch here (or follow the process that runs it) until Ctrl-C.

    Every job on the repository is reported with one line as it ends, whoever started it. The
    watch stays stored when this stops: a server keeps the repository fresh from then on.
    """
    from server.watcher import Watcher, watch_lease

    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    watcher = Watcher(service, only=repo_path)
    task = asyncio.create_task(watcher.run(), name="watcher")
    print(f"watching {repo_path}: every save re-indexes what changed (Ctrl-C to stop)", file=sys.stderr)
    told_owner = False
    seen = {last_job}
    began = loop.time()
    try:
        while not interrupted.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), timeout=0.5)
            # After the watcher's first rounds: by then it holds the lease unless another process does.
            if not told_owner and loop.time() - began > 3 and repo_path not in watcher.watches:
                owner = watch_lease(service.settings, repo_path).owner_pid()
                if owner is not None and owner != os.getpid():
                    print(f"process {owner} runs this repository's watch; showing its jobs", file=sys.stderr)
                    told_owner = True
            newest = await service.list_jobs(repo_path=repo_path, limit=1)
            for job in newest.jobs:
                if job.job_id not in seen and job.status in TERMINAL_STATUSES:
                    seen.add(job.job_id)
                    print(
                        f"{job.completed_at or job.failed_at or job.cancelled_at}  {job.status}: {job.progress_message}"
                    )
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(
        f"stopped watching here; {repo_path} stays watched, so a running server keeps it fresh "
        f"(`codebase-mcp unwatch {repo_path}` ends that)",
        file=sys.stderr,
    )
    return 0


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    workers: subprocess.Popen[bytes] | None = None
    try:
        attached = _queue_consumers(settings.broker_url, EMBED_QUEUE) if args.workers == "auto" else 0
    except pika_errors.AMQPError as error:
        print(f"error: RabbitMQ is unreachable ({type(error).__name__}); run codebase-mcp doctor", file=sys.stderr)
        return 2
    if args.workers == "always" or (args.workers == "auto" and attached == 0):
        workers = _spawn_workers(args.processes, args.threads)

    async def work(service: Any) -> int:
        started = await service.start_indexing(args.path, args.name, watch=args.watch)
        note = " (already running: following it)" if started.existing else ""
        print(f"job {started.job_id} {started.status}{note}", file=sys.stderr)
        if args.no_wait:
            _emit(started, args.json, lambda r: print(r.job_id))
            return 0
        final = await _follow(service, started.job_id, args.json)
        if final is None:
            if args.cancel_on_interrupt:
                await service.cancel(started.job_id)
                print(f"interrupted: cancelled job {started.job_id}", file=sys.stderr)
            elif workers is not None:
                print(
                    f"detached: job {started.job_id} stays running, but the workers this command started stop now;\n"
                    "  it goes on as soon as workers attach (dramatiq actors.worker) or on the next "
                    "codebase-mcp index.\n"
                    f"  follow it:  codebase-mcp status {started.job_id}",
                    file=sys.stderr,
                )
            else:
                print(
                    f"detached: job {started.job_id} goes on in the background.\n"
                    f"  follow it:  codebase-mcp status {started.job_id}   (or: codebase-mcp jobs)\n"
                    f"  cancel it:  codebase-mcp cancel {started.job_id}",
                    file=sys.stderr,
                )
            return 130
        _emit(final, args.json, _render_status)
        if args.search and final.status == "completed":
            result = await service.search(args.search, repository=started.repo_path, limit=args.limit)
            print(f"\nsearch: {args.search!r}")
            _emit(result, args.json, _render_search)
        if args.watch:
            return await _keep_watching(service, started.repo_path, started.job_id)
        return 0 if final.status == "completed" else 1

    try:
        return _with_service(settings, work)
    finally:
        if workers is not None:
            workers.send_signal(signal.SIGTERM)
            try:
                workers.wait(timeout=30)
            except subprocess.TimeoutExpired:
                workers.kill()


def _configure_logging(settings: Settings, level: str | None = None) -> Path | None:
    """stderr plus the log file of the settings; the file written, or None when it cannot be."""
    return configure_logging(
        level or settings.log_level,
        json_lines=settings.log_json,
        log_file=settings.log_path,
        log_file_max_bytes=settings.log_file_max_bytes,
        log_file_backups=settings.log_file_backups,
    )


def _log_file_epilog() -> str:
    try:
        where = str(get_settings().log_path)
    except ValueError:  # invalid settings: the command itself reports them
        where = "CODEBASE_MCP_LOG_FILE, default <CODEBASE_MCP_DATA_DIR>/logs/codebase-mcp.log"
    return f"Logs go to stderr and to {where} (rotated; `codebase-mcp doctor` shows the path)."


def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when every check passes, 1 otherwise; settings errors are reported, not raised."""
    from pydantic import ValidationError as SettingsError

    from server import doctor

    try:
        settings: Settings | None = get_settings()
    except SettingsError as error:
        settings = None
        result = doctor.report(None, [], settings_error=str(error))
    if settings is not None:
        log_file = _configure_logging(settings, level="WARNING")  # only the report on the terminal
        result = doctor.report(settings, asyncio.run(doctor.run_checks(settings)), log_file=log_file)
    print(json.dumps(result, indent=2) if args.json else doctor.render(result))
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codebase-mcp", description=__doc__, epilog=_log_file_epilog())
    parser.add_argument(
        "--verbose", action="store_true", help="also log the schema migration steps (as LOG_LEVEL=DEBUG does)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the MCP server")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default=None, help="HTTP bind address (default CODEBASE_MCP_HTTP_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default CODEBASE_MCP_HTTP_PORT, 8765)")

    commands.add_parser("migrate", help="create or upgrade the database schema (alembic upgrade head)")

    index = commands.add_parser("index", help="index a repository in the background and follow its progress")
    index.add_argument("path")
    index.add_argument("--name", default=None)
    index.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    index.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the job (default: detach)")
    index.add_argument("--search", default=None, help="after completion, run this search over the repository")
    index.add_argument("--limit", type=int, default=5)
    index.add_argument(
        "--workers",
        choices=["auto", "always", "never"],
        default="auto",
        help="start local workers for this run when none are attached (auto)",
    )
    index.add_argument("--processes", type=int, default=1)
    index.add_argument("--threads", type=int, default=4)
    index.add_argument(
        "--watch",
        action="store_true",
        help="then keep running: every save re-indexes what changed (the watch is stored; see `unwatch`)",
    )
    index.add_argument("--json", action="store_true")

    for verb, text in (
        ("watch", "re-index an indexed repository on every save, also across server restarts"),
        ("unwatch", "stop re-indexing a repository on save"),
    ):
        watch_cmd = commands.add_parser(verb, help=text)
        watch_cmd.add_argument("repository", help="repository name or path")
        watch_cmd.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="show one job (default: the newest)")
    status.add_argument("job_id", nargs="?", default=None)
    status.add_argument("--json", action="store_true")

    jobs_cmd = commands.add_parser("jobs", help="list jobs, newest first")
    jobs_cmd.add_argument("--status", default=None)
    jobs_cmd.add_argument("--limit", type=int, default=20)
    jobs_cmd.add_argument("--json", action="store_true")

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    cancel.add_argument("--json", action="store_true")

    search = commands.add_parser("search", help="search indexed code (hybrid: semantic + full text)")
    search.add_argument("query")
    search.add_argument("--repository", default=None, help="repository name or path")
    search.add_argument("--language", default=None)
    search.add_argument("--path-prefix", default=None, help="relative to the repository root, e.g. src/api/")
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--mode", choices=["hybrid", "vector", "text"], default="hybrid")
    search.add_argument(
        "--scope", choices=["code", "tests", "docs", "all"], default="code", help="file roles searched (default code)"
    )
    search.add_argument("--json", action="store_true")

    doctor = commands.add_parser("doctor", help="check settings, database, RabbitMQ and embedder; say what to fix")
    doctor.add_argument("--json", action="store_true")

    setup = commands.add_parser(
        "setup", help="bring RabbitMQ, the database and the schema up, run doctor, print the client configuration"
    )
    setup.add_argument("--config-only", action="store_true", help="only print the client configuration")

    repos = commands.add_parser("repos", help="list indexed repositories")
    repos.add_argument("--json", action="store_true")

    delete_repo = commands.add_parser("delete-repo", help="remove a repository's index (not its files)")
    delete_repo.add_argument("repository", help="repository name or path")
    delete_repo.add_argument("--json", action="store_true")

    args = parser.parse_args(argv)
    if args.command == "doctor":
        return cmd_doctor(args)
    settings = get_settings()
    log_file = _configure_logging(settings)
    if args.verbose:
        logging.getLogger("alembic").setLevel(logging.INFO)

    if args.command == "setup":
        from server.setup import run_setup

        return run_setup(settings, config_only=args.config_only)
    if args.command == "serve":
        from server.app import serve_http, serve_stdio

        # On stderr too: it is where an MCP client shows a server's output, if anywhere.
        logging.getLogger("codebase_mcp").info("log file: %s", log_file or "none (stderr only)")

        if args.transport == "http":
            serve_http(settings, args.host or settings.http_host, args.port or settings.http_port)
        else:
            serve_stdio(settings)
        return 0
    if args.command == "migrate":

        async def migrate(service: Any) -> int:
            print(f"database schema is at head (embedding dimension {service.dimension})")
            return 0

        return _with_service(settings, migrate)
    if args.command == "index":
        return cmd_index(args, settings)
    if args.command == "status":

        async def show(service: Any) -> int:
            job_id = args.job_id
            if job_id is None:
                newest = await service.list_jobs(limit=1)
                if not newest.jobs:
                    print("no jobs yet: start one with `codebase-mcp index PATH`", file=sys.stderr)
                    return 1
                job_id = newest.jobs[0].job_id
            _emit(await service.status(job_id), args.json, _render_status)
            return 0

        return _with_service(settings, show)
    if args.command == "jobs":

        async def listing(service: Any) -> int:
            result = await service.list_jobs(status=args.status, limit=args.limit)
            if args.json:
                print(json.dumps(result.model_dump(), indent=2))
            else:
                for job in result.jobs:
                    print(f"{job.job_id}  {job.status:<9} {job.progress_percentage:>3}%  {job.name}  {job.repo_path}")
            return 0

        return _with_service(settings, listing)
    if args.command == "cancel":

        async def do_cancel(service: Any) -> int:
            _emit(await service.cancel(args.job_id), args.json, _render_status)
            return 0

        return _with_service(settings, do_cancel)
    if args.command == "search":

        async def do_search(service: Any) -> int:
            result = await service.search(
                args.query, args.repository, args.language, args.path_prefix, args.limit, args.mode, args.scope
            )
            _emit(result, args.json, _render_search)
            return 0

        return _with_service(settings, do_search)
    if args.command == "repos":

        async def do_repos(service: Any) -> int:
            _emit(await service.list_repositories(), args.json, _render_repositories)
            return 0

        return _with_service(settings, do_repos)
    if args.command in ("watch", "unwatch"):

        async def do_watch(service: Any) -> int:
            result = await service.watch(args.repository, args.command == "watch")
            state = "watched" if result.watched else "not watched"
            _emit(result, args.json, lambda r: print(f"{r.name} ({r.path}): {state}{'' if r.changed else ' already'}"))
            return 0

        return _with_service(settings, do_watch)
    if args.command == "delete-repo":

        async def do_delete(service: Any) -> int:
            deleted = await service.delete_repository(args.repository)
            _emit(
                deleted,
                args.json,
                lambda d: print(
                    f"deleted {d.name} ({d.path}): {d.files_deleted} files, {d.chunks_deleted} chunks, "
                    f"{d.jobs_deleted} jobs"
                ),
            )
            return 0

        return _with_service(settings, do_delete)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
