"""A worker host of its own for partition tests: a network namespace joined to this one by a veth pair
on loopback-range addresses, TCP forwarders on the host's end to the servers (which listen on 127.0.0.1
only), and a link that can be cut and restored.

The addresses are a /30 in 127.0.0.0/8. The kernel drops such packets on any interface but `lo` as
martians unless the interface has `route_localnet` set, so both veth ends get it (per device: the
setting goes away with the device, nothing machine-wide is changed). Without custom rules the kernel
merges its local and main routing tables, so the veth's /30 wins over `lo`'s `local 127.0.0.0/8`.

A cut is a real partition: packets stop, and nobody is told. The host's end goes down, which leaves the
namespace's end without carrier (its packets are dropped, its routes stay); on the host a blackhole
route for the namespace's address keeps the host's replies from falling back to `local 127.0.0.0/8`
(they would reach no socket there, and the host would reset its own connections).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tests.conftest import unreachable

# Every `ip` or `sysctl` call ends within this; a hung one fails the test instead of holding it.
_COMMAND_TIMEOUT_S = 10
# A forwarder gives up connecting to its server after this (the servers are on this machine).
_CONNECT_TIMEOUT_S = 5.0


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=_COMMAND_TIMEOUT_S)


@dataclass
class Namespace:
    """A network namespace `name`, reachable from here at `address` (and this side at `host_address`)."""

    name: str
    host_veth: str
    host_address: str
    address: str
    cut_off: bool = False

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Cut the link: from now on no packet crosses it, either way, and no connection is reset."""
        _run("ip", "route", "add", "blackhole", f"{self.address}/32")
        self.cut_off = True
        _run("ip", "link", "set", self.host_veth, "down")

    def restore(self) -> None:
        """Bring the link back: packets flow again, over the connections that survived the cut."""
        _run("ip", "link", "set", self.host_veth, "up")  # its connected route comes back with it
        _run("ip", "route", "del", "blackhole", f"{self.address}/32")
        self.cut_off = False


@contextmanager
def network_namespace() -> Iterator[Namespace]:
    """A fresh namespace with its veth pair and loopback up; deleted again, veth and route included."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        unreachable("network namespaces need root and iproute2's `ip`")
    tag = secrets.token_hex(3)
    # A /30 of its own in 127.200.0.0/16: tests running side by side do not share addresses.
    base = 4 * secrets.randbelow(2**14)
    subnet = f"127.200.{base // 256}"
    ns = Namespace(
        name=f"visionq-{tag}",
        host_veth=f"vq{tag}h",
        host_address=f"{subnet}.{base % 256 + 1}",
        address=f"{subnet}.{base % 256 + 2}",
    )
    inner = f"vq{tag}n"
    inside = ns.prefix
    _run("ip", "netns", "add", ns.name)
    try:
        _run("ip", "link", "add", ns.host_veth, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", ns.name)
        _run("sysctl", "-qw", f"net.ipv4.conf.{ns.host_veth}.route_localnet=1")
        _run(*inside, "sysctl", "-qw", f"net.ipv4.conf.{inner}.route_localnet=1")
        _run("ip", "addr", "add", f"{ns.host_address}/30", "dev", ns.host_veth)
        _run(*inside, "ip", "addr", "add", f"{ns.address}/30", "dev", inner)
        _run("ip", "link", "set", ns.host_veth, "up")
        _run(*inside, "ip", "link", "set", inner, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        # Each step on its own: one that fails must not leave the others undone.
        if ns.cut_off:
            with suppress(subprocess.SubprocessError):
                _run("ip", "route", "del", "blackhole", f"{ns.address}/32")
        with suppress(subprocess.SubprocessError):
            _run("ip", "link", "del", ns.host_veth)  # deletes its peer too
        _run("ip", "netns", "del", ns.name)


def via(url: str, host: str, port: int) -> str:
    """`url` (a broker's or a database's) with its host and port replaced, credentials kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Forwarder:
    """Forwards TCP connections made to (`host`, `port`) to (`target_host`, `target_port`), each byte as
    it comes, from an event loop on a thread of its own. A connection closed on one side is closed on
    the other; nothing else ends one, so a partition between a client and this forwarder looks to the
    server exactly as a silent client does."""

    def __init__(self, host: str, target_host: str, target_port: int) -> None:
        self._host = host
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._failure: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._serve, name=f"forward-{target_port}", daemon=True)

    def __enter__(self) -> Forwarder:
        self._thread.start()
        if not self._ready.wait(_CONNECT_TIMEOUT_S) or self._failure is not None:
            raise RuntimeError(f"the forwarder to {self._target} did not start") from self._failure
        return self

    def __exit__(self, *_: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(_CONNECT_TIMEOUT_S * 2)

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # handed to __enter__, or lost with the thread
            self._failure = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, self._host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()  # the cut-off side may never read: do not wait for it
        # Aborted, every connection's pipes end by themselves; one still connecting ends within its bound.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_CONNECT_TIMEOUT_S + 1)
            for task in stuck:
                task.cancel()

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self._writers.add(client_out)
        try:
            server_in, server_out = await asyncio.wait_for(
                asyncio.open_connection(*self._target), _CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            client_out.transport.abort()
            self._writers.discard(client_out)
            return
        self._writers.add(server_out)
        try:
            await asyncio.gather(_pipe(client_in, server_out), _pipe(server_in, client_out))
        finally:
            for writer in (client_out, server_out):
                writer.transport.abort()
                self._writers.discard(writer)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until `source` ends or either side fails, then close `sink` (and so end the other pipe)."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        sink.transport.abort()
