"""The LLM DDP path launched across "nodes": two torchrun processes (``--nnodes 2``,
``--nproc-per-node 1`` each, c10d rendezvous), as ``srun torchrun`` starts them on a SLURM
cluster (clsuite/slurm.py, docs/cluster.md); here both "nodes" are this host, with gloo.

Each worker joins through clsuite.llm.distributed exactly as ``clsuite llm-train`` does under
torchrun (:func:`env_info`, :func:`worker_device`, :func:`init_group`) and runs the
collectives the training loop needs (:func:`gather_rows`, :func:`agree`). On two nodes both
ranks have ``LOCAL_RANK`` 0, so each would take ``cuda:0`` of its own node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clsuite.llm.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
WORKER = """
import json, os, sys
import torch
from clsuite.llm.distributed import agree, env_info, gather_rows, init_group, shard_bounds, worker_device

info = env_info()
device = worker_device(torch.device("cpu"), info)
init_group(info, device)
n = 5
start, stop = shard_bounds(n, info.rank, info.world)
rows = gather_rows(torch.arange(start, stop, dtype=torch.float32) * 10, n, info)
out = {"rank": info.rank, "world": info.world, "local_rank": info.local_rank, "device": str(device),
       "group_rank": int(os.environ["GROUP_RANK"]), "rows": rows.tolist(),
       "agree_same": agree(7, info, device), "agree_different": agree(info.rank, info, device)}
torch.distributed.destroy_process_group()
with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as f:
    json.dump(out, f)
"""


@pytest.mark.slow  # two torch imports and a rendezvous: ~15-30 s
def test_two_torchrun_nodes_join_one_gloo_group(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    endpoint = f"127.0.0.1:{free_port()}"
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1",
           "HOME": str(tmp_path)}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={i}",
                               "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                               "--rdzv-id=clsuite-test", "--max-restarts=0", str(tmp_path / "worker.py"),
                               str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        logs = [p.communicate(timeout=180)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in nodes), "\n".join(logs)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert {(r["rank"], r["world"], r["local_rank"], r["device"]) for r in ranks} == {(0, 2, 0, "cpu"), (1, 2, 0, "cpu")}
    assert sorted(r["group_rank"] for r in ranks) == [0, 1]  # one torchrun agent per "node"
    for r in ranks:  # the rows of both nodes, in rank order, on each
        assert r["rows"] == [0.0, 10.0, 20.0, 30.0, 40.0]
        assert r["agree_same"] is True and r["agree_different"] is False
