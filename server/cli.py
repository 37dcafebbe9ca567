"""``codebase-mcp``: serve the MCP server, run migrations, and use the tools from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from models.logs import configure_logging
from models.settings import Settings, get_settings
from server.errors import CallerError

_TERMINAL = ("completed", "failed", "cancelled")


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


def _queue_consumers(broker_url: str, queue: str) -> int:
    import pika
    from pika.exceptions import ChannelClosedByBroker

    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.consumer_count)
        except ChannelClosedByBroker:
            return 0
    finally:
        if connection.is_open:
            connection.close()


def _spawn_workers(processes: int, threads: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "actors", "--processes", str(processes), "--threads", str(threads)],
        env={**os.environ, "dramatiq_queue_prefetch": str(threads)},
    )


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
            f"{'  (' + ranks + ')' if ranks else ''}[/dim]",
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
    table = Table("name", "path", "files", "chunks", "languages", "last indexed", "embedder", "active job")
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
        )
    Console().print(table)


def _progress_line(status: Any) -> str:
    width = 30
    filled = width * status.progress_percentage // 100
    bar = "#" * filled + "-" * (width - filled)
    rate = f"{status.files_per_second:.1f} files/s" if status.files_per_second else "-- files/s"
    eta = f"ETA {status.eta_seconds:.0f}s" if status.eta_seconds is not None else "ETA --"
    return f"[{bar}] {status.progress_percentage:>3}% {status.phase:<9} {rate}  {eta}"


async def _follow(service: Any, job_id: str, quiet: bool) -> Any:
    last = ""
    while True:
        status = await service.status(job_id)
        line = _progress_line(status)
        if not quiet and line != last:
            end = "\n" if not sys.stderr.isatty() else "\r"
            print(line, end=end, file=sys.stderr, flush=True)
            last = line
        if status.status in _TERMINAL:
            if not quiet and sys.stderr.isatty():
                print(file=sys.stderr)
            return status
        await asyncio.sleep(1.0)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    workers: subprocess.Popen[bytes] | None = None
    if args.workers == "always" or (
        args.workers == "auto" and _queue_consumers(settings.broker_url, "index.embed") == 0
    ):
        print("no workers are attached to RabbitMQ: starting local workers for this run", file=sys.stderr)
        workers = _spawn_workers(args.processes, args.threads)

    async def work(service: Any) -> int:
        started = await service.start_indexing(args.path, args.name)
        note = " (already running: following it)" if started.existing else ""
        print(f"job {started.job_id} {started.status}{note}", file=sys.stderr)
        if args.no_wait:
            _emit(started, args.json, lambda r: print(r.job_id))
            return 0
        try:
            final = await _follow(service, started.job_id, args.json)
        except (KeyboardInterrupt, asyncio.CancelledError):
            if args.cancel_on_interrupt:
                await service.cancel(started.job_id)
                print(f"\ncancelled job {started.job_id}", file=sys.stderr)
            else:
                print(f"\ndetached; the job goes on: codebase-mcp status {started.job_id}", file=sys.stderr)
            return 130
        _emit(final, args.json, _render_status)
        if args.search and final.status == "completed":
            result = await service.search(args.search, repository=started.repo_path, limit=args.limit)
            print(f"\nsearch: {args.search!r}")
            _emit(result, args.json, _render_search)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codebase-mcp", description=__doc__)
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
    index.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="show one job")
    status.add_argument("job_id")
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
    search.add_argument("--json", action="store_true")

    repos = commands.add_parser("repos", help="list indexed repositories")
    repos.add_argument("--json", action="store_true")

    delete_repo = commands.add_parser("delete-repo", help="remove a repository's index (not its files)")
    delete_repo.add_argument("repository", help="repository name or path")
    delete_repo.add_argument("--json", action="store_true")

    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)

    if args.command == "serve":
        from server.app import serve_http, serve_stdio

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
            _emit(await service.status(args.job_id), args.json, _render_status)
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
                args.query, args.repository, args.language, args.path_prefix, args.limit, args.mode
            )
            _emit(result, args.json, _render_search)
            return 0

        return _with_service(settings, do_search)
    if args.command == "repos":

        async def do_repos(service: Any) -> int:
            _emit(await service.list_repositories(), args.json, _render_repositories)
            return 0

        return _with_service(settings, do_repos)
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
