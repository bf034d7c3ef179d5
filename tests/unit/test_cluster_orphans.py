"""The cluster test's clean-up of clusters whose run was killed (`remove_orphans`): their nodes
are stopped and their folders deleted; a live run's cluster is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.rabbitmq_cluster import FOLDER_PREFIX, remove_orphans
from tests.support.wait import wait_for


def gone_pid() -> int:
    """The pid of a process that has exited (a run killed before its clean-up)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def fake_node(folder: Path) -> subprocess.Popen:
    """A process standing in for a node: a sleeper with the node's data folder in its
    environment, as `rabbitmq-server` and its Erlang processes have."""
    (folder / "node1").mkdir(parents=True)
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={"RABBITMQ_MNESIA_BASE": str(folder / "node1" / "mnesia")},
    )


@pytest.fixture
def folders():
    made: list[Path] = []

    def make(owner: int) -> Path:
        made.append(Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{owner}-")))
        return made[-1]

    yield make
    for folder in made:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_a_dead_runs_nodes_are_stopped_and_its_folder_deleted(folders):
    orphan = folders(gone_pid())
    node = fake_node(orphan)
    remove_orphans()
    wait_for(lambda: node.poll() is not None, timeout=10, message="the orphan node to stop")
    assert not orphan.exists()


def test_a_live_runs_cluster_is_left_alone(folders):
    mine = folders(os.getpid())
    node = fake_node(mine)
    try:
        remove_orphans()
        assert node.poll() is None
        assert mine.exists()
    finally:
        node.kill()
        node.wait()
