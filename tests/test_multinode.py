"""Two "nodes" on localhost train and evaluate exactly as one node with two devices (issue 16).

Each node is a process started with the environment Lightning reads when no scheduler launches
it (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``; ``Trainer(num_nodes=2, devices=1)``), as on
a cluster launched by hand; SLURM and torchrun set the same through their own variables. The job
uses cross-rank in-batch negatives and sharded evaluation; its losses, weights and metrics must
equal a single-node, 2-device run of the same seed.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multinode_worker.py")
TIMEOUT = 600


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def launch(out: Path, num_nodes: int, devices: int) -> list[dict]:
    out.mkdir()
    port = free_port()
    environment = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    for name in ("NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "SLURM_JOB_ID"):
        environment.pop(name, None)
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), str(num_nodes), str(devices)],
            env=environment | ({"NODE_RANK": str(node)} if num_nodes > 1 else {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in range(num_nodes)
    ]
    try:
        for process in processes:
            _, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, err[-3000:]
    finally:
        for process in processes:
            process.kill()
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multinode")
    return launch(folder / "one_node", 1, 2), launch(folder / "two_nodes", 2, 1)


def test_two_nodes_form_one_job_of_two_ranks(runs):
    _, two_nodes = runs
    assert [report["global_rank"] for report in two_nodes] == [0, 1]
    assert [report["node_rank"] for report in two_nodes] == [0, 1]
    assert all(report["world_size"] == 2 for report in two_nodes)


def test_two_nodes_train_and_evaluate_as_one_node(runs):
    one_node, two_nodes = runs
    for single, multi in zip(one_node, two_nodes, strict=True):
        # the same batches, negatives and gathered in-batch candidates on each global rank
        np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-6)
        for key, value in single["state"].items():
            np.testing.assert_allclose(multi["state"][key], value, rtol=1e-6, atol=1e-7)
        for stage in ("val", "test"):
            assert multi[stage].keys() == single[stage].keys()
            for name, value in single[stage].items():
                assert multi[stage][name] == pytest.approx(value, rel=1e-9), (stage, name)
    # both ranks of a job end with the same weights and metrics
    for run in runs:
        assert run[0]["test"] == run[1]["test"]
        assert run[0]["state"] == run[1]["state"]
