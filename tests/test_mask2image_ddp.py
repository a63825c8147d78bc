"""mask2image_train under torchrun: two CPU processes (gloo) share one run, then it resumes on one, or
exactly on two."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "32", "--phantoms", "24", "--batch", "4", "--ngf", "4", "--ndf", "4",
        "--n-blocks", "1", "--tick-kimg", "0.008", "--snapshot-ticks", "1", "--threads", "1"]


def run(cmd, tmp_path):
    env = {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_torchrun_two_processes_then_resume_on_one(tmp_path):
    app = str(ROOT / "apps" / "mask2image_train")
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", app,
         *TINY, "--kimg", "0.016", "--run-root", "runs", "--name", "ddp"], tmp_path)
    (run_dir,) = tmp_path.glob("runs/*-ddp")  # rank 0 alone creates the run directory
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    records = [r for r in lines if "kimg" in r]
    assert records and records[-1]["kimg"] >= 0.016
    assert json.loads((run_dir / "training_options.json").read_text())["resolved"]["world_size"] == 2
    assert proc.stdout.count("grid (label map") == 1  # only rank 0 reports
    run([sys.executable, app, *TINY, "--resume", str(run_dir), "--kimg", "0.032"], tmp_path)
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r for r in lines if "kimg" in r][-1]["kimg"] >= 0.032
    # No half-written snapshot is left behind by either process.
    assert not [p for p in (run_dir / "snapshots").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_torchrun_resume_on_as_many_processes_matches_an_uninterrupted_run(tmp_path):
    # Each rank's data position is saved and restored (each reads its own shard with its own RNG).
    from lesion_models import load_pretrained

    app = str(ROOT / "apps" / "mask2image_train")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", app, *TINY]
    run([*torchrun, "--kimg", "0.016", "--run-root", "runs", "--name", "whole"], tmp_path)
    run([*torchrun, "--kimg", "0.008", "--run-root", "runs", "--name", "half"], tmp_path)
    (half,) = tmp_path.glob("runs/*-half")
    run([*torchrun, "--resume", str(half), "--kimg", "0.016"], tmp_path)
    (whole,) = tmp_path.glob("runs/*-whole")
    a = load_pretrained(sorted((whole / "snapshots").iterdir())[-1] / "G").state_dict()
    b = load_pretrained(sorted((half / "snapshots").iterdir())[-1] / "G").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
