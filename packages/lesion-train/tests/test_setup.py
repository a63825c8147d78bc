import dataclasses

import pytest
from lesion_train import runs
from lesion_train.gan_loop import LoopConfig
from lesion_train.mask2image import Mask2ImageConfig
from lesion_train.setup import apply_overrides, load_run_config


@dataclasses.dataclass
class Inner:
    lr: float = 1.0
    keys: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Outer:
    name: str = "x"
    inner: Inner = dataclasses.field(default_factory=Inner)
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)

    def __post_init__(self):
        for name, cls in (("inner", Inner), ("loop", LoopConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))


def test_dotted_overrides_set_nested_fields_and_leave_the_original():
    base = Outer()
    changed = apply_overrides(base, {"name": "y", "inner.lr": 0.5, "loop.total_kimg": 3.0})
    assert (changed.name, changed.inner.lr, changed.loop.total_kimg) == ("y", 0.5, 3.0)
    assert (base.name, base.inner.lr, base.loop.total_kimg) == ("x", 1.0, LoopConfig().total_kimg)
    with pytest.raises(ValueError, match="Outer.name has no nested options"):
        apply_overrides(base, {"name.x": 1})
    with pytest.raises(ValueError, match="Inner has no option nope"):
        apply_overrides(base, {"inner.nope": 1})


def test_load_run_config_reads_back_overrides_and_upgrades_old_shapes(tmp_path):
    runs.write_options(tmp_path, {**dataclasses.asdict(Outer(name="saved")), "resolved": {"store": "s"}})
    (tmp_path / "snapshots" / "000001").mkdir(parents=True)
    (tmp_path / "snapshots" / "000001" / runs.STATE_NAME).write_bytes(b"")
    config = load_run_config(tmp_path, Outer, {"loop.seed": 7})
    assert config == Outer(name="saved", loop=LoopConfig(seed=7))
    with pytest.raises(runs.ResumeError, match="not a Mask2ImageConfig options file"):
        load_run_config(tmp_path, Mask2ImageConfig)
    # mask2image options from before the nested loop: run fields move into ``loop``.
    flat = {"arch": "spade", "total_kimg": 2.0, "threads": None, "name": None, "seed": 3, "grid_size": 4,
            "snapshot_ticks": 2, "device": "cpu", "amp": "off", "run_root": "r", "resume": None, "ngf": 8}
    runs.write_options(tmp_path, flat)
    config = load_run_config(tmp_path, Mask2ImageConfig)
    assert config.ngf == 8 and config.loop == LoopConfig(total_kimg=2.0, minibatch_repeats=1, snapshot_ticks=2,
                                                         grid_size=4, seed=3, device="cpu", run_root="r", name="")
