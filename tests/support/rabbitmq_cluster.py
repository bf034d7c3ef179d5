"""A RabbitMQ cluster of a test's own: three `rabbitmq-server` nodes on this machine, joined
with `rabbitmqctl join_cluster`, removed afterwards (even when the test fails).

Nothing here touches the machine's own node: each node of ours has its own name (`<prefix>N@
localhost`), its own AMQP and distribution ports, its own data and log folders, its own empty
config, env and plugins files (never /etc/rabbitmq's), and HOME in a temp folder, so its Erlang
cookie is one of its own. A node with another cookie cannot even talk to the machine's node,
and joining a cluster is explicit anyway (`join_cluster` names our first node). The node
processes run as the current user, from the server's own scripts (Debian's /usr/sbin wrappers
would switch to the `rabbitmq` user and its cookie).

A run that is killed (SIGTERM or SIGKILL to pytest) never reaches its cleanup, and its nodes
would live on; the next cluster stops them first (`remove_orphans`), so a machine never piles
up clusters of dead runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
#: Each cluster's temp folder is named after the process that made it: `<prefix><pid>-<random>`.
FOLDER_PREFIX = "assessments-cluster-"


def scripts_dir() -> Path | None:
    """Where `rabbitmq-server` and `rabbitmqctl` are, or None when RabbitMQ is not installed."""
    if (SCRIPTS / "rabbitmq-server").exists():
        return SCRIPTS
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


def free_port(low: int = 20000, high: int = 30000) -> int:
    """A free TCP port in [low, high): the distribution port plus 10000 (the range rabbitmqctl
    takes for itself) must stay below 65536 and clear of the machine's node's 35672."""
    for _ in range(200):
        port = low + secrets.randbelow(high - low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@dataclass
class Node:
    name: str
    amqp_port: int
    dist_port: int
    folder: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"


@dataclass
class LocalCluster:
    """`with LocalCluster.started(3) as cluster:` three nodes joined into one cluster."""

    folder: Path
    scripts: Path
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def started(cls, size: int = 3, timeout: float = 90.0, discovery: str | None = None):
        """Without `discovery`, the first node forms the cluster and the others join it with
        `rabbitmqctl join_cluster`. With it, the text of a peer discovery config such as
        docker/rabbitmq-cluster.conf, its nodes named `rabbit@rabbitN` (which become ours):
        every node boots blank at once and they form the cluster themselves."""
        scripts = scripts_dir()
        if scripts is None:
            raise RuntimeError("rabbitmq-server is not installed")
        remove_orphans()
        folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        cluster = cls(folder, scripts)
        try:
            cluster._prepare(size, discovery)
            for node in cluster.nodes:
                cluster._start(node)
            for node in cluster.nodes:
                cluster._await(node, timeout)
            if discovery is None:
                for node in cluster.nodes[1:]:
                    cluster.ctl(node, "stop_app")
                    cluster.ctl(node, "join_cluster", cluster.nodes[0].name)
                    cluster.ctl(node, "start_app")
            cluster._await_members(size, timeout)
            yield cluster
        finally:
            cluster.remove()

    # --- what a test uses ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """ASSESSMENTS_BROKER_URL for the whole cluster: every node, first node first."""
        first, *others = self.nodes
        return ",".join([first.url, *(f"127.0.0.1:{node.amqp_port}" for node in others)])

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def members(self, node: Node) -> set[str]:
        """The running nodes of the cluster `node` is in, as `node` sees it."""
        status = self.ctl(node, "cluster_status", "--formatter", "json")
        return set(json.loads(status).get("running_nodes", []))

    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def ctl(self, node: Node, *args: str, tool: str = "rabbitmqctl", timeout: float = 60) -> str:
        done = subprocess.run(
            [str(self.scripts / tool), "-n", node.name, *args],
            env=node.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} -n {node.name} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def queue_leader(self, queue: str, via: Node | None = None) -> str:
        """The node that leads quorum queue `queue` (asked of `via`, or of a running node)."""
        via = via or self.running()[0]
        listed = self.ctl(via, "list_queues", "-q", "--no-table-headers", "name", "type", "leader")
        for line in listed.splitlines():
            parts = line.split("\t")
            if parts[0] == queue:
                assert parts[1] == "quorum", f"{queue} is a {parts[1]} queue"
                return parts[2]
        raise AssertionError(f"no queue {queue} on the cluster: {listed}")

    def queue_replicas(self, queue: str, via: Node | None = None) -> tuple[set[str], set[str]]:
        """The nodes quorum queue `queue` has a member on, and which of those are online. A
        queue declared while a node was not yet in the cluster has no member there."""
        via = via or self.running()[0]
        listed = self.ctl(via, "list_queues", "-q", "--no-table-headers", "name", "members", "online")
        for line in listed.splitlines():
            name, members, online = line.split("\t")
            if name == queue:
                return _node_list(members), _node_list(online)
        raise AssertionError(f"no queue {queue} on the cluster: {listed}")

    def kill(self, node: Node) -> None:
        """A node failure: the node's processes die at once (SIGKILL), nothing said to anyone."""
        assert node.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(30)

    def connections(self, node: Node) -> int:
        return len(self.ctl(node, "list_connections", "-q", "--no-table-headers", "name").splitlines())

    # --- the nodes' lives ------------------------------------------------------------------

    def _prepare(self, size: int, discovery: str | None = None) -> None:
        home = self.folder / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        (self.folder / "rabbitmq-env.conf").write_text("")
        prefix = f"aq{uuid.uuid4().hex[:6]}"
        names = [f"{prefix}-{index}@localhost" for index in range(1, size + 1)]
        peers = _with_our_names(discovery, names) if discovery else ""
        for index, name in enumerate(names, start=1):
            folder = self.folder / f"node{index}"
            folder.mkdir()
            amqp_port, dist_port = free_port(), free_port()
            config = folder / "rabbitmq.conf"
            config.write_text(
                f"listeners.tcp.1 = 127.0.0.1:{amqp_port}\nlog.console = false\nlog.file.level = info\n"
                + peers
            )
            (folder / "enabled_plugins").write_text("[].\n")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                "HOME": str(home),
                "RABBITMQ_NODENAME": name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(amqp_port),
                "RABBITMQ_DIST_PORT": str(dist_port),
                "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(config),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
                "RABBITMQ_LOG_BASE": str(folder / "log"),
                "RABBITMQ_PID_FILE": str(folder / "node.pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                "ERL_EPMD_ADDRESS": "127.0.0.1",
            }
            self.nodes.append(Node(name, amqp_port, dist_port, folder, env))

    def _start(self, node: Node) -> None:
        log = (node.folder / "server.out").open("wb")
        node.process = subprocess.Popen(
            [str(self.scripts / "rabbitmq-server")],
            env=node.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `kill` takes the whole node
        )
        log.close()

    def _await(self, node: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if node.process.poll() is not None:
                raise RuntimeError(f"node {node.name} exited: {self._tail(node)}")
            try:
                self.ctl(node, "await_startup", timeout=max(1.0, min(30.0, deadline - time.monotonic())))
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {node.name} did not start: {self._tail(node)}") from None
                time.sleep(0.5)

    def _await_members(self, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            running = self.members(self.nodes[0])
            if len(running) == size:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster has {sorted(running)} running, not {size} nodes")
            time.sleep(0.5)

    def _tail(self, node: Node) -> str:
        with contextlib.suppress(OSError):
            return (node.folder / "server.out").read_text()[-2000:]
        return ""

    def remove(self) -> None:
        """Stop every node (a polite stop, then SIGKILL) and delete every folder."""
        for node in self.running():
            with contextlib.suppress(Exception):
                self.ctl(node, "stop", timeout=30)
        for node in self.nodes:
            if node.process is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                node.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def remove_orphans() -> None:
    """Stop the nodes of clusters whose test run is gone (killed before its cleanup) and delete
    their folders. A node is known by its environment: its data folder lies in the cluster's."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        owner = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        for pid in _processes_under(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _processes_under(folder: Path) -> list[int]:
    """Processes whose RABBITMQ_MNESIA_BASE lies in `folder` (the nodes and their helpers)."""
    marker = f"RABBITMQ_MNESIA_BASE={folder}/".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes():
                found.append(int(environ.parent.name))
    return found


def _with_our_names(discovery: str, names: list[str]) -> str:
    """A peer discovery config's `rabbit@rabbitN` (compose's host names) as our Nth node."""
    renamed = re.sub(r"rabbit@rabbit(\d+)", lambda found: names[int(found.group(1)) - 1], discovery)
    return renamed if renamed.endswith("\n") else renamed + "\n"


def _node_list(listed: str) -> set[str]:
    """`[a@localhost, b@localhost]`, as `rabbitmqctl list_queues` prints a list of nodes."""
    return {name.strip() for name in listed.strip().strip("[]").split(",") if name.strip()}
