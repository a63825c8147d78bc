"""DCGAN equals pytorch/examples ``dcgan/main.py`` on transplanted weights (64 px, tiny widths).

The fixture holds the example's outputs, losses, gradients and batch-norm statistics after one
training step; ours runs the same step through the trainer's losses (``run_ours`` of the fixture
script). The example's D ends in a Sigmoid and trains with BCE; ours returns the logit and uses
``softplus``, the same loss: the test compares our logits with the example's Sigmoid input and
``sigmoid(ours)`` with its output.
"""

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture
def make_dcgan():
    path = Path(__file__).resolve().parent / "fixtures" / "reference" / "make_dcgan.py"
    spec = importlib.util.spec_from_file_location("make_dcgan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dcgan_matches_pytorch_examples(one_thread, reference_fixture, assert_parity, make_dcgan):
    tensors, meta = reference_fixture("dcgan")
    assert meta["reference"] == "pytorch/examples" and len(meta["commit"]) == 40
    weights = {k: v for k, v in tensors.items() if k.startswith(("G.", "D."))}
    ours = make_dcgan.run_ours(meta["our_config"], weights, tensors["in.reals"], tensors["in.noise"])
    order = ("out.", "loss.", "grad.", "after.")  # outputs, losses, gradients, statistics
    recorded = {k: tensors[k] for prefix in order for k in sorted(tensors) if k.startswith(prefix)}
    assert ours.keys() == recorded.keys()
    for key, reference in recorded.items():
        kind = "gradients" if key.startswith("grad.") else "losses" if key.startswith("loss.") else "outputs"
        assert_parity(ours[key], reference, key, meta["tolerances"][kind])
    # Every parameter of both networks has a recorded gradient.
    assert sum(k.startswith("grad.") for k in recorded) == sum(
        k.startswith(("G.", "D.")) and not k.split(".")[-1].startswith(("running", "num_batches")) for k in weights)
