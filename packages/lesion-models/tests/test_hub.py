import dataclasses

import pytest
import torch

from lesion_models.hub import Pretrained, PretrainedLoadError, load_pretrained, register


@dataclasses.dataclass
class TinyConfig:
    width: int = 4
    kernel: tuple[int, int] = (3, 3)


@register
class Tiny(torch.nn.Module, Pretrained):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.conv = torch.nn.Conv2d(3, config.width, config.kernel)
        self.head = torch.nn.Linear(config.width, config.width)
        self.tied = self.head  # shared tensors must save and load
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_round_trip_rebuilds_identical_model(tmp_path):
    model = Tiny(TinyConfig(width=5, kernel=(1, 3)))
    model.step.fill_(7)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(tmp_path / "m")
    assert isinstance(loaded, Tiny) and loaded.config == model.config
    assert loaded.config.kernel == (1, 3)  # tuple restored from JSON list
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert loaded.step.item() == 7
    assert isinstance(Tiny.from_pretrained(tmp_path / "m"), Tiny)


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "m")
    Tiny(TinyConfig(width=6)).save_pretrained(tmp_path / "m")
    assert load_pretrained(tmp_path / "m").config.width == 6
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_truncated_weights_name_the_file(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(PretrainedLoadError, match="model.safetensors"):
        load_pretrained(tmp_path / "m")


def test_missing_dir_unknown_type_and_wrong_class(tmp_path):
    with pytest.raises(PretrainedLoadError, match="config.json: missing"):
        load_pretrained(tmp_path / "nothing")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "Nope", "config": {}}')
    with pytest.raises(PretrainedLoadError, match="unknown model type 'Nope'"):
        load_pretrained(tmp_path / "odd")

    @dataclasses.dataclass
    class OtherConfig:
        pass

    class Other(torch.nn.Module, Pretrained):
        config_class = OtherConfig

    Tiny(TinyConfig()).save_pretrained(tmp_path / "m")
    with pytest.raises(PretrainedLoadError, match="holds a Tiny, not a Other"):
        Other.from_pretrained(tmp_path / "m")


def test_unknown_config_keys_are_rejected(tmp_path):
    Tiny(TinyConfig()).save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    path.write_text(path.read_text().replace('"width"', '"wdth"'))
    with pytest.raises(PretrainedLoadError, match="unknown config keys"):
        load_pretrained(tmp_path / "m")
