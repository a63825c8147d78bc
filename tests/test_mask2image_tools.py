"""The mask tool app and pix2pixHD's two-stage local-enhancer training."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lesion_models.pix2pixhd import Pix2PixHDConfig, Pix2PixHDGenerator
from lesion_train.distributed import DistEnv
from lesion_train.mask2image import Mask2ImageConfig, Mask2ImageTrainer

ROOT = Path(__file__).resolve().parents[1]


def load_app(name):
    spec = importlib.util.spec_from_file_location(f"app_{name}", ROOT / "apps" / name / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mask_deform_app_writes_variants_and_preview(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    Image.fromarray((((yy - 24) ** 2 + (xx - 32) ** 2 < 150) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    result = CliRunner().invoke(load_app("mask_deform").main, [str(tmp_path / "m.png"), "--n", "3", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["m__d0.png", "m__d1.png", "m__d2.png", "preview.png"]
    variant = np.asarray(Image.open(tmp_path / "o" / "m__d1.png"))
    assert variant.shape == (48, 64) and set(np.unique(variant)) == {0, 255}
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = CliRunner().invoke(load_app("mask_deform").main, [str(tmp_path / "bad.png"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "bad.png: unreadable mask" in result.output


def test_local_enhancer_starts_from_the_global_model_and_can_keep_it_fixed(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    small = dict(resolution=64, batch_size=1, ngf=4, ndf=4, n_blocks=1, feat_num=0)
    global_g = Pix2PixHDGenerator(Pix2PixHDConfig(ngf=4, n_blocks=1))
    global_g.save_pretrained(tmp_path / "global")
    config = Mask2ImageConfig(arch="pix2pixhd", n_local_enhancers=1, init_global=str(tmp_path / "global"), **small)
    trainer = Mask2ImageTrainer(config, num_classes=3, env=DistEnv())
    for key, value in global_g.global_net.state_dict().items():
        assert torch.equal(trainer.G.global_net.state_dict()[key], value)
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., 16:48, 20:44] = 1
    batch = {"images": torch.rand(1, 3, 64, 64) * 2 - 1, "masks": masks, "labels": torch.tensor([1])}
    frozen = {k: v.clone() for k, v in trainer.G.global_net.state_dict().items()}
    local = [p.detach().clone() for p in trainer.G.local_nets.parameters()]
    trainer.step(batch, train_global=False)
    assert all(torch.equal(frozen[k], v) for k, v in trainer.G.global_net.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(local, trainer.G.local_nets.parameters()))
    trainer.step(batch, train_global=True)
    assert any(not torch.equal(frozen[k], v) for k, v in trainer.G.global_net.state_dict().items())
    with pytest.raises(ValueError, match="local enhancer exists for --arch ours|pix2pixhd only"):
        Mask2ImageConfig(arch="spade", n_local_enhancers=1)
