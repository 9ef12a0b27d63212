"""TcpProxy: a TCP proxy on 127.0.0.1 between the bot and its database, for network faults.

`pause()` is a partition in which the database vanishes without a word: no byte is forwarded
either way, no socket is closed, new connections are accepted but lead nowhere. `resume()`
heals it, and what was held back is delivered. `refuse()` is a database that is plainly gone:
every connection is closed and new ones are refused, until `accept()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:<port> to target_host:target_port, until told otherwise."""

    target_host: str
    target_port: int
    port: int = 0
    _running: asyncio.Event = field(default_factory=asyncio.Event)
    _refusing: bool = False
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1, forwarding."""
        self._running.set()
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def pause(self) -> None:
        """Stop forwarding bytes both ways; every socket stays open."""
        self._running.clear()

    def resume(self) -> None:
        """Forward again, starting with what was held back."""
        self._running.set()

    def refuse(self) -> None:
        """Close every connection, and close new ones at once."""
        self._refusing = True
        for writer in list(self._writers):
            writer.transport.abort()

    def accept(self) -> None:
        """Accept and forward connections again."""
        self._refusing = False

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self._running.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._running.wait()  # during a partition nothing reaches the database
            if self._refusing:
                return
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            pumps = [asyncio.create_task(self._pump(reader, up_writer)),
                     asyncio.create_task(self._pump(up_reader, writer))]
            self._tasks.update(pumps)
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                self._tasks.difference_update(pumps)
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except OSError:
            pass  # the database or the client went away; the other side is closed below
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                await self._running.wait()  # a chunk read as the partition began is held, too
                dst.write(data)
                await dst.drain()
