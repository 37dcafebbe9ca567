"""A TCP relay that delays what the upstream sends by a fixed time: a slow link for one service.

This machine's kernel has no ``sch_netem`` (CONFIG_NET_SCH_NETEM is not set), so ``tc netem`` cannot
add latency here. The multi-host test runs this relay on the data host instead and sends the worker
hosts' new PostgreSQL connections through it with an nftables ``redirect``: every byte PostgreSQL
sends them arrives ``--delay-ms`` later, as ``tc qdisc add dev eth0 root netem delay 200ms`` on the
data host would do to that traffic (one way; each round trip is that much longer). Bytes keep their
order and nothing is dropped.

    python -m tests.hosts.delay_relay --listen 10.0.0.1:54330 --upstream 10.0.0.1:54329 --delay-ms 200

prints ``LISTENING`` once the socket is bound, and on SIGTERM ``DELIVERED <n>``: how many delayed
deliveries it made (each one an answer, or a part of one, that a client waited for) before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

_delivered = 0


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        global _delivered
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            if delay > 0:
                _delivered += 1
            writer.write(data)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, b""))
        await delivering
    finally:
        delivering.cancel()


async def _serve(listen: tuple[str, int], upstream: tuple[str, int], delay: float) -> None:
    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _forward(client_reader, server_writer, 0.0),
                _forward(server_reader, client_writer, delay),
            )
        except (OSError, asyncio.CancelledError):
            # A peer gone, or the relay stopping: either way this connection ends here, quietly.
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    server = await asyncio.start_server(relay, *listen)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("LISTENING", flush=True)
    async with server:
        await stop.wait()
    print(f"DELIVERED {_delivered}", flush=True)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.listen, args.upstream, args.delay_ms / 1000.0))


if __name__ == "__main__":
    main()
