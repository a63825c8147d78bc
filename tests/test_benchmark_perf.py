"""The shared benchmark measuring code counts FLOPs and derives rates correctly (figures are never
asserted, but the arithmetic behind them is)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _perf  # noqa: E402


def test_count_flops_of_a_matmul_and_its_backward():
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(16, 4)
    assert _perf.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    # backward of a @ b w.r.t. a only: grad_a = grad_out @ b.T, another 2 * 8 * 4 * 16
    assert _perf.count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 8 * 16 * 4)


def test_measurement_rates():
    m = _perf.Measurement("x", images_per_iter=16, seconds=2.0, flops=300 * 10**9, matmul_gflops=200.0, peak_mb=1.0)
    assert m.img_per_s == 8.0 and m.gflops == 150.0 and m.mfu == 0.75
    assert "75%" in _perf.row(m)


def test_measure_runs_and_reports_a_positive_matmul_rate():
    x = torch.randn(64, 64)
    m = _perf.measure("mm", lambda: x @ x, images_per_iter=1, warmup=1, iters=2)
    assert m.flops == 2 * 64**3 and m.seconds > 0 and m.matmul_gflops > 0 and m.peak_mb > 0


def test_count_flops_through_a_gradient_penalty():
    # autograd.grad w.r.t. a module's leaf input failed under FlopCounterMode's module hooks (torch 2.15).
    critic = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8, requires_grad=True)

    def penalty():
        (g,) = torch.autograd.grad(critic(x).square().sum(), x, create_graph=True)
        g.square().sum().backward()

    assert _perf.count_flops(penalty) > 0
