"""apps/pggan_train and apps/pggan_sample through subprocesses: CLI, torchrun DDP, SIGKILL + resume.

Each subprocess imports torch afresh (15-40 s on the shared 2-core machine), so only the
train -> sample smoke test runs by default; torchrun, SIGKILL and divergence runs are slow-marked
(their in-process counterparts live in test_pggan_train.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--resolution", "8", "--initial-resolution", "4", "--phantom-count", "64", "--fmap-base", "32", "--fmap-max", "8", "--z-dim", "8",
    "--stabilize-kimg", "0.064", "--transition-kimg", "0.064", "--tick-kimg", "0.064", "--minibatch-repeats", "2",
    "--snapshot-ticks", "1", "--grid-size", "8", "--cpu-threads", "1",
]


def env(tmp_path):
    return {**os.environ, "LESION_GAN_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def run_app(tmp_path, app, *args, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / "apps" / app), *args], capture_output=True, text=True,
                          env=env(tmp_path), cwd=tmp_path, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def log_of(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_train_help_lists_every_option_with_defaults(load_app):
    out = CliRunner().invoke(load_app("pggan_train").main, ["--help"], terminal_width=200).output
    for option in ("--preset", "--data", "--resolution", "--kimg", "--resume", "--amp", "--conditional", "--loss",
                   "--fused-scale"):
        assert option in out
    assert "default: cpu" in out and "from --preset" in out


def test_train_then_sample(tmp_path, load_app):
    proc = run_app(tmp_path, "pggan_train", *TINY, "--total-kimg", "0.128", "--conditional", "--out", "runs")
    grid = Path(proc.stdout.strip().splitlines()[-1])
    assert grid.is_file() and grid.suffix == ".png", proc.stdout
    run_dir = grid.parent.parent
    assert (run_dir / "training_options.json").is_file() and log_of(run_dir)[-1]["kimg"] >= 0.128

    out = tmp_path / "samples"
    args = [str(run_dir), "--n", "5", "--out", str(out), "--class", "melanoma", "--seed", "3", "--interpolate"]
    proc = run_app(tmp_path, "pggan_sample", *args)
    pngs = sorted(out.glob("seed0003_*.png"))
    assert len(pngs) == 5 and Path(proc.stdout.strip().splitlines()[-1]) == (out / "grid.png").resolve()
    assert (out / "interpolation.png").is_file()
    assert np.asarray(Image.open(pngs[0])).shape == (8, 8, 3)

    # In process: deterministic per seed, another seed differs, a bad class is a one-line error.
    sample = load_app("pggan_sample").main
    runner = CliRunner()
    assert runner.invoke(sample, [*args[:-1], "--out", str(tmp_path / "again")]).exit_code == 0
    assert (tmp_path / "again" / pngs[0].name).read_bytes() == pngs[0].read_bytes()
    assert runner.invoke(sample, [str(run_dir), "--n", "1", "--out", str(tmp_path / "o"), "--seed", "4"]).exit_code == 0
    assert (tmp_path / "o" / "seed0004_000000.png").read_bytes() != (out / "seed0003_000000.png").read_bytes()
    bad = runner.invoke(sample, [str(run_dir), "--out", str(out), "--class", "wart"])
    assert bad.exit_code == 1 and "unknown class 'wart'" in bad.output


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    args = [*TINY, "--total-kimg", "2", "--out", "runs", "--name", "killed"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "apps" / "pggan_train"), *args], env=env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        ticks = 0
        while time.time() < deadline and ticks < 3:  # a snapshot every tick; kill wherever it is
            time.sleep(0.2)
            logs = list(tmp_path.glob("runs/*-killed/log.jsonl"))
            ticks = len(logs[0].read_text().splitlines()) if logs else 0
            assert proc.poll() is None, "training ended before it could be killed"
        assert ticks >= 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (run_dir,) = tmp_path.glob("runs/*-killed")
    killed = log_of(run_dir)[-1]
    target = round(killed["kimg"] + 0.128, 3)  # beyond wherever the kill landed, however fast the ticks
    proc = run_app(tmp_path, "pggan_train", "--resume", str(run_dir), "--total-kimg", str(target))
    assert Path(proc.stdout.strip().splitlines()[-1]).is_file()
    log = log_of(run_dir)
    assert log[-1]["kimg"] >= target and log[-1]["step"] > killed["step"]


@pytest.mark.slow
def test_divergence_exits_with_a_one_line_error(tmp_path):
    run_app(tmp_path, "pggan_train", *TINY, "--total-kimg", "0.064", "--out", "runs", "--name", "nan")
    (run_dir,) = tmp_path.glob("runs/*-nan")
    proc = run_app(tmp_path, "pggan_train", "--resume", str(run_dir), "--lr", "1e30", "--total-kimg", "5", check=False)
    assert proc.returncode == 1
    assert "Error: step" in proc.stderr and "the last snapshot is intact" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_torchrun_two_processes_then_resume_on_one(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "apps" / "pggan_train"), *TINY, "--total-kimg", "0.128", "--out", "runs", "--name", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("runs/*-ddp")  # one run directory, written by rank 0 only
    log = log_of(run_dir)
    assert log[-1]["world_size"] == 2 and log[-1]["kimg"] >= 0.128
    assert proc.stdout.count(".png") == 1  # only rank 0 reports
    run_app(tmp_path, "pggan_train", "--resume", str(run_dir), "--total-kimg", "0.192")
    log = log_of(run_dir)
    assert log[-1]["world_size"] == 1 and log[-1]["kimg"] >= 0.192


@pytest.mark.slow
def test_torchrun_resume_on_as_many_processes_matches_an_uninterrupted_run(tmp_path):
    # Every rank's RNG (its latents) and data position come back from the snapshot.
    from lesion_models import load_pretrained

    def torchrun(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "apps" / "pggan_train"), *TINY, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env(tmp_path), cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun("--total-kimg", "0.384", "--out", "runs", "--name", "whole")
    torchrun("--total-kimg", "0.256", "--out", "runs", "--name", "half")  # stops at 8 px, stable
    (half,) = tmp_path.glob("runs/*-half")
    torchrun("--resume", str(half), "--total-kimg", "0.384")
    (whole,) = tmp_path.glob("runs/*-whole")
    for name in ("G_ema", "D"):
        a = load_pretrained(sorted((whole / "snapshots").iterdir())[-1] / name).state_dict()
        b = load_pretrained(sorted((half / "snapshots").iterdir())[-1] / name).state_dict()
        for key in a:
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6, atol=1e-7, err_msg=f"{name}.{key}")


@pytest.mark.slow  # inductor compiles the generator: ~20 s on a CPU
def test_compiled_sampling_draws_the_eager_images_with_one_graph(tmp_path):
    from lesion_models.pggan import PGGANConfig, PGGANGenerator
    from lesion_train.sampling import sample_to_folder
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    G = PGGANGenerator(PGGANConfig(resolution=16, fmap_base=64, fmap_max=16, num_classes=3))
    for compile in (False, True):  # 5 images in batches of 2: the last one padded when compiled
        sample_to_folder(G, tmp_path / str(compile), 5, seed=2, batch=2, compile=compile)
    assert counters["stats"]["unique_graphs"] == 1
    for i in range(5):
        eager, compiled = (np.asarray(Image.open(tmp_path / str(c) / f"seed0002_{i:06d}.png")).astype(int) for c in (False, True))
        assert np.abs(eager - compiled).max() <= 1 and eager.std() > 1  # uint8 rounding of float-equal images
