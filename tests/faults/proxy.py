"""A fault-injecting TCP proxy in the spirit of Toxiproxy, for putting between a service and its
PostgreSQL, Redis or upstream, and breaking the link for real.

Modes: ``pass`` (forward), ``latency`` (delay each chunk), ``timeout`` (accept, forward nothing),
``reset`` (accept, then reset the connection), ``down`` (close every connection and refuse new
ones). It runs its own event loop in a thread, so synchronous and asynchronous tests alike drive it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Literal

Mode = Literal["pass", "latency", "timeout", "reset", "down"]


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.latency = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._thread.start()
        if listen_port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                listen_port = s.getsockname()[1]
        self.port = listen_port
        self._call(self._open())

    # -- control (thread-safe) ------------------------------------------------------------
    def set(self, mode: Mode, latency: float = 0.0) -> None:
        self._call(self._set(mode, latency))

    def url_for(self, url: str) -> str:
        """``url`` with its host:port replaced by the proxy's."""
        host, port = self.upstream
        return url.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self._call(self._shutdown())
        self._call(self._finish_handlers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- inside the loop --------------------------------------------------------------------
    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._conns):
            _reset(writer)
        self._conns.clear()

    async def _finish_handlers(self) -> None:
        """Cancel and await the connection handlers still running, so none is left pending (and
        reported as destroyed) when the loop is closed."""
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _set(self, mode: Mode, latency: float) -> None:
        self.mode, self.latency = mode, latency
        if mode == "down":
            await self._shutdown()
        else:
            await self._open()
            if mode in ("reset", "timeout"):
                for writer in list(self._conns):
                    _reset(writer)
                self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(writer)
            return
        self._conns.add(writer)
        if self.mode == "timeout":
            # Hold the connection open and say nothing, as a hung network does.
            try:
                while await reader.read(65536):
                    pass
            finally:
                self._conns.discard(writer)
                writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            self._conns.discard(writer)
            return
        self._conns.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.mode == "latency" and self.latency:
                        await asyncio.sleep(self.latency)
                    if self.mode in ("timeout", "down", "reset"):
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:
                    pass

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.discard(writer)
        self._conns.discard(up_writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    except OSError:
        pass
