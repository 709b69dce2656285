"""A RabbitMQ cluster of extra nodes on loopback, for fault tests: started beside the machine's default
node (never touched), clustered, and always stopped and removed afterwards, also when a test fails.

Each node has its own AMQP and distribution ports and its own folders under one temporary folder owned
by the `rabbitmq` user. The machine's rabbitmq-env.conf and rabbitmq.conf pin the default node's name
and port, so every node gets an env file and a config file of its own. The nodes run as `rabbitmq`,
whose Erlang cookie (/var/lib/rabbitmq/.erlang.cookie) rabbitmqctl uses too, and light (one
scheduler, no busy waiting): the machine may have two cores for all of it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.stack import free_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ_HOME = Path("/var/lib/rabbitmq")  # the rabbitmq user's home, where its Erlang cookie is
# Seconds one rabbitmqctl command may take; a node's start (about 10 s here), and its stop.
CTL_TIMEOUT_S = 60.0
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
_LIGHT = "+sbwt none +sbwtdcpu none +sbwtdio none +S 1 -kernel inet_dist_use_interface {127,0,0,1}"


class ClusterError(RuntimeError):
    """A node would not start, join or answer within its bound."""


@dataclass(frozen=True)
class Node:
    """One extra RabbitMQ node: its name, its ports, its folder."""

    name: str  # e.g. vq-1a2b3c-1@localhost
    amqp_port: int
    dist_port: int
    base: Path

    def url(self, vhost: str = "") -> str:
        """An AMQP URL of this node (guest may only log in over loopback, which this is)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{vhost}"

    @property
    def log(self) -> Path:
        return self.base / "server.out"


def rabbitmqctl(node: Node | str, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
    """Run `rabbitmqctl -n NODE ARGS`; its output, or ClusterError with what it said."""
    return _ctl("rabbitmqctl", node, *args, timeout_s=timeout_s)


def _ctl(tool: str, node: Node | str, *args: str, timeout_s: float) -> str:
    name = node.name if isinstance(node, Node) else node
    command = [tool, "-q", "-n", name, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{' '.join(command)}: no answer within {timeout_s} s") from exc
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(command)} exited {done.returncode}: {done.stderr or done.stdout}")
    return done.stdout


@dataclass
class Cluster:
    """Running nodes, clustered; `stop_app` and `start_app` one of them for a fault."""

    nodes: list[Node]
    _servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def broker_url(self, vhost: str = "", *, first: int = 0) -> str:
        """A failover URL listing every node (kombu tries them in turn), starting at node `first`."""
        ordered = self.nodes[first:] + self.nodes[:first]
        return ";".join(node.url(vhost) for node in ordered)

    def pid(self, node: Node) -> int:
        """The process that runs `node` (runuser; the node's Erlang VM is one of its descendants)."""
        return self._servers[node.name].pid

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def running(self, via: Node) -> list[str]:
        """The names of the nodes `via` sees running (its cluster_status)."""
        status = rabbitmqctl(via, "cluster_status", "--formatter", "erlang")
        running = status.split("{running_nodes,", 1)[1].split("]", 1)[0]
        return [part.strip(" ['\n") for part in running.split(",") if part.strip(" ['\n")]

    def leader(self, queue: str, *, vhost: str = "/", via: Node | None = None) -> Node:
        """The node that leads quorum queue `queue` now, as `via` (a running node) sees it."""
        ask = via or self.nodes[0]
        out = rabbitmqctl(ask, "list_queues", "-p", vhost, "name", "type", "leader", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue:
                if parts[1] != "quorum":
                    raise ClusterError(f"queue {queue!r} is a {parts[1]} queue, not a quorum one")
                return self.node(parts[2])
        raise ClusterError(f"no queue {queue!r} in vhost {vhost!r} on {ask.name}:\n{out}")

    def stop_app(self, node: Node) -> None:
        """Stop RabbitMQ on `node` (its Erlang VM stays up): it leaves the cluster's running nodes."""
        rabbitmqctl(node, "stop_app")

    def start_app(self, node: Node) -> None:
        """Start RabbitMQ on `node` again and wait until it is back in the cluster."""
        rabbitmqctl(node, "start_app")
        rabbitmqctl(node, "await_startup", "--timeout", str(int(START_TIMEOUT_S)), timeout_s=START_TIMEOUT_S)

    def _start(self, node: Node, owner: pwd.struct_passwd) -> None:
        conf = node.base / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\nloopback_users.guest = true\n")
        (node.base / "rabbitmq-env.conf").write_text("")  # not the machine's (its NODENAME, its port)
        (node.base / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (node.base / sub).mkdir()
        _chown_tree(node.base, owner)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(RABBITMQ_HOME),
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(node.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.base / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(node.base / "feature_flags"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _LIGHT,
        }
        with node.log.open("wb") as log:
            self._servers[node.name] = subprocess.Popen(
                ["runuser", "-u", owner.pw_name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                 RABBITMQ_SERVER],
                cwd=RABBITMQ_HOME,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _await(self, node: Node) -> None:
        """Wait until `node` runs RabbitMQ (before its VM registers, rabbitmqctl fails at once)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        server = self._servers[node.name]
        while True:
            if server.poll() is not None:
                raise ClusterError(f"{node.name} exited {server.returncode}:\n{_tail(node.log)}")
            try:
                rabbitmqctl(node, "await_startup", "--timeout", "10", timeout_s=20)
                return
            except ClusterError as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"{node.name} not up in {START_TIMEOUT_S} s: {exc}") from exc
            time.sleep(0.5)

    def _join(self, node: Node, seed: Node) -> None:
        rabbitmqctl(node, "stop_app")
        rabbitmqctl(node, "join_cluster", seed.name)
        rabbitmqctl(node, "start_app")
        rabbitmqctl(node, "await_startup", "--timeout", str(int(START_TIMEOUT_S)), timeout_s=START_TIMEOUT_S)

    def _stop(self) -> None:
        """Halt every node: `rabbitmqctl stop`, then SIGKILL what is left of its process group."""
        for node in self.nodes:
            server = self._servers.get(node.name)
            if server is None:
                continue
            if server.poll() is None:
                try:
                    rabbitmqctl(node, "stop", timeout_s=STOP_TIMEOUT_S)
                except ClusterError:
                    pass  # killed below
            try:
                server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
            _killpg(server.pid)
            server.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def rabbit_cluster(size: int = 3) -> Iterator[Cluster]:
    """`size` new RabbitMQ nodes in one cluster; all stopped and their folders removed on the way out.

    Raises ClusterError (after cleaning up) when a node does not start or join in time.
    """
    owner = pwd.getpwnam("rabbitmq")
    token = secrets.token_hex(3)
    # Not under pytest's tmp_path: its parents are root's alone, and the nodes run as rabbitmq.
    base = Path(tempfile.mkdtemp(prefix=f"visionq-rabbit-{token}-"))
    os.chown(base, owner.pw_uid, owner.pw_gid)
    ports: set[int] = set()
    while len(ports) < 2 * size:  # two calls may hand out one port twice
        ports.add(free_port())
    free = sorted(ports)
    nodes = []
    for i in range(1, size + 1):
        folder = base / f"node{i}"
        folder.mkdir()
        nodes.append(Node(f"vq-{token}-{i}@localhost", free[2 * i - 2], free[2 * i - 1], folder))
    cluster = Cluster(nodes)
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        cleanup.callback(cluster._stop)
        for node in nodes:
            cluster._start(node, owner)
        for node in nodes:
            cluster._await(node)
        for node in nodes[1:]:
            cluster._join(node, nodes[0])
        yield cluster


def _chown_tree(root: Path, owner: pwd.struct_passwd) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
