"""Speed changes of the mask2image trainer and synthesis keep the results (float tolerance)."""

import resource
import sys

import pytest
import torch
from lesion_train.distributed import DistEnv, reuse_freed_memory
from lesion_train.mask2image import Mask2ImageConfig, Mask2ImageTrainer

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(resolution=32, batch_size=2, ngf=4, ndf=4, n_blocks=1)


def _batch():
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 10:22] = 1
    return {"images": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1,
            "masks": masks, "labels": torch.tensor([0, 2])}


def test_fused_adam_steps_like_the_reference_adam():
    """The trainer's fused Adam gives the same weights as torch's default single-tensor Adam.

    (Not SPADE: some of its weights get gradients near rounding level, where any two Adam
    implementations differ by up to lr.)"""
    trainers = []
    for _ in range(2):
        torch.manual_seed(0)
        trainers.append(Mask2ImageTrainer(Mask2ImageConfig(arch="ours", **TINY), num_classes=3, env=DistEnv()))
    fused, reference = trainers
    assert fused.opt_g.defaults["fused"] and fused.opt_d.defaults["fused"]
    for name in ("opt_g", "opt_d"):
        old = getattr(reference, name)
        setattr(reference, name, torch.optim.Adam(old.param_groups[0]["params"], lr=old.defaults["lr"],
                                                  betas=old.defaults["betas"], foreach=False))
    for _ in range(2):
        for trainer in trainers:
            trainer.step(_batch())
    # Biases right before an instance norm get a gradient that is rounding noise (the norm removes
    # them), which Adam's g / sqrt(v) scales up to +-lr in any implementation; they do not change
    # any output. Every weight and the generated images must agree; a weight whose gradient is
    # itself near rounding level may differ by a few percent of one step (lr 2e-4), hence atol 1e-5.
    for a, b in zip(list(fused.G.parameters()) + list(fused.D.parameters()),
                    list(reference.G.parameters()) + list(reference.D.parameters()), strict=True):
        if a.ndim > 1:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    batch = _batch()
    with torch.no_grad():
        x = torch.cat([batch["masks"], 1 - batch["masks"], torch.zeros(2, 3, 32, 32)], 1)
        out_fused = fused.G(x, image=batch["images"])
        out_reference = reference.G(x, image=batch["images"])
    torch.testing.assert_close(out_fused, out_reference, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_tensor_memory_is_reused_without_new_page_faults():
    """After ``reuse_freed_memory`` a freed 64 MB tensor's pages are reused, not unmapped and
    faulted in anew (glibc's default for blocks over 128 KB)."""
    assert reuse_freed_memory()
    torch.ones(16 * 2**20).sum()  # the first allocation faults its pages in
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 * 2**20).sum()
    pages = 64 * 2**20 // resource.getpagesize()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < pages


def test_inference_in_channels_last_gives_the_same_images():
    """pggan_sample's channels_last generator draws the same images as the NCHW one."""
    from lesion_models.pggan import PGGANConfig, PGGANGenerator
    from lesion_train.sampling import for_inference

    torch.manual_seed(0)
    G = PGGANGenerator(PGGANConfig(resolution=32, fmap_base=64, fmap_max=32, num_classes=3)).eval()
    z, labels = torch.randn(3, G.z_dim), torch.tensor([0, 1, 2])
    with torch.inference_mode():
        expected = G(z, labels)
        fast = for_inference(G, "cpu")
        assert not fast.training and not fast.blocks[0][0].weight.is_contiguous()  # NHWC now
        torch.testing.assert_close(fast(z, labels), expected, rtol=1e-4, atol=1e-4)  # uint8 step: 8e-3
