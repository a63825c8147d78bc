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


@dataclasses.dataclass
class StrictConfig:
    resolution: int
    gain: float = 1.0
    scale: float | None = None
    names: tuple[str, ...] = ("a",)
    relu: bool = True

    def __post_init__(self):
        if self.resolution & (self.resolution - 1):
            raise ValueError(f"StrictConfig.resolution must be a power of two, got {self.resolution}")


@register
class Strict(torch.nn.Module, Pretrained):
    config_class = StrictConfig

    def __init__(self, config: StrictConfig):
        super().__init__()
        self.config = config
        self.w = torch.nn.Parameter(torch.zeros(config.resolution))


def _edit_config(directory, **changes):
    import json

    path = directory / "config.json"
    payload = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            del payload["config"][key]
        else:
            payload["config"][key] = value
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"resolution": "sixteen"}, r'StrictConfig\.resolution is "sixteen", expected int'),
    ({"resolution": 16.0}, r"StrictConfig\.resolution is 16\.0, expected int"),
    ({"resolution": True}, r"StrictConfig\.resolution is true, expected int"),
    ({"gain": "1"}, r'StrictConfig\.gain is "1", expected float'),
    ({"scale": [1]}, r"StrictConfig\.scale is \[1\], expected float \| None"),
    ({"names": ["a", 2]}, r'StrictConfig\.names is \["a", 2\], expected tuple\[str, \.\.\.\]'),
    ({"names": "ab"}, r'StrictConfig\.names is "ab", expected tuple'),
    ({"relu": 1}, r"StrictConfig\.relu is 1, expected bool"),
    ({"resolution": KeyError}, r"StrictConfig: missing config keys \['resolution'\]"),
    ({"extra": 1}, r"StrictConfig: unknown config keys \['extra'\]"),
    ({"resolution": 12}, r"StrictConfig\.resolution must be a power of two, got 12"),
])
def test_wrong_config_values_name_the_file_and_the_field(tmp_path, changes, message):
    Strict(StrictConfig(resolution=8)).save_pretrained(tmp_path / "m")
    path = _edit_config(tmp_path / "m", **changes)
    for load in (load_pretrained, Strict.from_pretrained):
        with pytest.raises(PretrainedLoadError) as info:
            load(tmp_path / "m")
        text = str(info.value)
        assert "\n" not in text and text.startswith(f"{path}: "), text
        assert info.match(message)


def test_config_accepts_ints_for_floats_and_fills_defaults(tmp_path):
    Strict(StrictConfig(resolution=8)).save_pretrained(tmp_path / "m")
    _edit_config(tmp_path / "m", gain=2, scale=None, relu=KeyError)
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.config == StrictConfig(resolution=8, gain=2, relu=True)


def test_config_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": ["Strict"], "config": {}}')
    with pytest.raises(PretrainedLoadError, match="config.json: model_type is"):
        load_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "Strict", "config": [8]}')
    with pytest.raises(PretrainedLoadError, match='config.json: "config" is a list, not an object'):
        load_pretrained(tmp_path / "m")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_torch_load_problem_never_advises_weights_only_false(tmp_path):
    from lesion_models.hub import torch_load_problem

    torch.save({"nimg": 1, "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(Exception) as info:
        torch.load(tmp_path / "evil.pt", weights_only=True)
    assert "weights_only" in str(info.value)  # PyTorch's own message carries the advice
    message = torch_load_problem(info.value)
    assert "weights_only" not in message and "\n" not in message
    assert message.startswith("holds Python objects other than tensors") and "getcwd" in message
    (tmp_path / "cut.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:40])
    with pytest.raises(Exception) as info:
        torch.load(tmp_path / "cut.pt", weights_only=True)
    assert torch_load_problem(info.value).startswith("unreadable or truncated (")
