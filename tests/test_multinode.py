"""Several nodes: torchrun's c10d rendezvous (``--nnodes N --rdzv-backend c10d --rdzv-endpoint
HOST:PORT``), as docs/gpu.md gives it, with two launchers on the loopback interface standing in for
two nodes of one process each. The run must equal a ``--standalone`` run of two processes on one
node: same world size, same ranks, so the same weights."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--resolution", "8", "--initial-resolution", "4", "--phantom-count", "64", "--fmap-base", "32", "--fmap-max", "8",
    "--z-dim", "8", "--stabilize-kimg", "0.064", "--transition-kimg", "0.064", "--tick-kimg", "0.064",
    "--minibatch-repeats", "2", "--snapshot-ticks", "1", "--grid-size", "8", "--cpu-threads", "1", "--total-kimg", "0.192",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path):
    return {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _torchrun(launcher: list[str], name: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, str(ROOT / "apps" / "pggan_train"), *TINY,
            "--out", "runs", "--name", name]


def _weights(run_dir: Path, name: str) -> dict:
    from lesion_models import load_pretrained

    return load_pretrained(sorted((run_dir / "snapshots").iterdir())[-1] / name).state_dict()


@pytest.mark.slow
def test_two_nodes_over_c10d_rendezvous_equal_two_processes_standalone(tmp_path):
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [subprocess.Popen(_torchrun(["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                         "--rdzv-endpoint", endpoint, "--rdzv-id", "lesion-gan-test"], "nodes"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=tmp_path)
             for _ in range(2)]
    outputs = [node.communicate(timeout=900) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert sum(out.count(".png") for out, _ in outputs) == 1  # only global rank 0 reports

    standalone = subprocess.run(_torchrun(["--standalone", "--nproc-per-node", "2"], "standalone"),
                                capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=900)
    assert standalone.returncode == 0, standalone.stderr[-3000:]

    (two_nodes,) = tmp_path.glob("runs/*-nodes")
    (one_node,) = tmp_path.glob("runs/*-standalone")
    for name in ("G_ema", "D"):
        a, b = _weights(two_nodes, name), _weights(one_node, name)
        for key in a:
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6, atol=1e-7, err_msg=f"{name}.{key}")


@pytest.mark.slow
def test_one_node_over_c10d_rendezvous(tmp_path):
    """The single-node form with an explicit endpoint, as a multi-node launch reads on its first node."""
    proc = subprocess.run(_torchrun(["--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                                     "--rdzv-endpoint", f"127.0.0.1:{_free_port()}"], "c10d"),
                          capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/*-c10d")
    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    assert last["world_size"] == 2 and last["kimg"] >= 0.192
