"""`uv run apps/evaluate` end to end (subprocess) and the evaluation orchestration in process."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from lesion_data.phantom import generate_phantoms
from lesion_data.prepare import phantom_store
from lesion_data.store import PreparedStore
from lesion_models.hub import Pretrained, register
from lesion_models.pggan import PGGANConfig, PGGANGenerator
from lesion_train.evaluation import EvaluateConfig, EvaluationError, evaluate, format_table, generator_source
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
ISIC = os.environ.get("LESION_SAMPLE_ISIC2017")


def run_app(*args, cache):
    env = dict(os.environ, LESION_GAN_CACHE=str(cache))
    return subprocess.run([sys.executable, str(ROOT / "apps" / "evaluate"), *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def real_store(cache):
    return phantom_store(resolution=32, n=64, seed=0, root=cache)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with two snapshots of a tiny PGGAN generator (different weights)."""
    run = tmp_path_factory.mktemp("runs") / "20260101-000000-tiny"
    for kimg, seed in ((0, 0), (4, 1)):
        torch.manual_seed(seed)
        PGGANGenerator(PGGANConfig(resolution=32, fmap_base=64, fmap_max=16)).save_pretrained(
            run / "snapshots" / f"{kimg:06d}" / "G_ema")
    return run


def write_folder(folder: pathlib.Path, images: np.ndarray) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def test_run_directory_snapshots_jsonl_report_and_rerun(run_dir, real_store, cache, tmp_path):
    report = tmp_path / "report"
    args = (run_dir, real_store, "--metrics", "swd,msssim", "--n", "16", "--report", report, "--device", "cpu")
    first = run_app(*args, cache=cache)
    assert first.returncode == 0, first.stderr
    assert "swd_avg" in first.stdout and "msssim_real" in first.stdout
    lines = [json.loads(line) for line in (run_dir / "metrics" / "swd.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in lines] == [0, 4]
    assert all(r["results"]["swd_avg"] > 0 and r["n"] == 16 for r in lines)
    page = (report / "index.html").read_text()
    assert "swd_avg" in page and "grid_real.png" in page and "curve_swd_avg.png" in page
    assert Image.open(report / "curve_msssim.png").size == (420, 260)
    # A re-run reuses what was measured with the same n and seed instead of appending duplicates.
    again = evaluate(EvaluateConfig(str(run_dir), str(real_store), metrics=("swd",), n=16, device="cpu",
                                    cache_dir=str(cache), progress=False, report=str(tmp_path / "again")))
    assert [r.get("reused") for r in again] == [True, True]
    assert (tmp_path / "again" / "grid_000000.png").is_file() and (tmp_path / "again" / "grid_000004.png").is_file()
    assert len((run_dir / "metrics" / "swd.jsonl").read_text().splitlines()) == 2


class CountingGenerator(torch.nn.Module):
    """A stand-in generator that records the batch sizes it is called with."""

    z_dim, num_classes, resolution = 4, 0, 8

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
        self.batch_sizes = []

    def forward(self, z, labels=None):
        self.batch_sizes.append(len(z))
        return torch.tanh(z @ self.weight)[:, :, None, None].expand(-1, -1, 8, 8)


def test_generated_images_are_made_once_on_full_batches():
    G = CountingGenerator()
    kept = generator_source(G, 10, seed=0, batch_size=4, device=torch.device("cpu"))
    assert G.batch_sizes == [4, 4, 4]  # one pass, the last batch padded to the full size
    passes = [torch.cat(list(kept.iterate())) for _ in range(3)]  # features, SWD, MS-SSIM
    assert G.batch_sizes == [4, 4, 4]
    streamed = generator_source(G, 10, seed=0, batch_size=4, device=torch.device("cpu"), materialize=False)
    again = torch.cat(list(streamed.iterate()))
    assert G.batch_sizes == [4] * 6 and passes[0].shape == (10, 3, 8, 8)
    assert all(torch.equal(p, again) for p in passes)


def test_no_room_for_the_scratch_file_means_generating_per_pass(monkeypatch):
    def full_disk(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full_disk, raising=False)
    G = CountingGenerator()
    source = generator_source(G, 10, seed=0, batch_size=4, device=torch.device("cpu"))
    first, second = (torch.cat(list(source.iterate())) for _ in range(2))
    assert G.batch_sizes == [4] * 6 and torch.equal(first, second)


@pytest.mark.slow  # inductor compiles the generator: ~20 s on a CPU
def test_compiled_generator_gives_the_eager_images():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    G = PGGANGenerator(PGGANConfig(resolution=32, fmap_base=64, fmap_max=16))
    eager, compiled = (torch.cat(list(generator_source(G, 10, seed=1, batch_size=4, device=torch.device("cpu"),
                                                       compile=compile).iterate())) for compile in (False, True))
    assert eager.shape == (10, 3, 32, 32) and eager.float().std() > 1
    assert (eager.int() - compiled.int()).abs().max() <= 1  # uint8 rounding of float-equal images
    assert counters["stats"]["unique_graphs"] == 1  # the padded last batch needed no second graph


def test_a_snapshot_directory_is_evaluated_as_its_g_ema(run_dir, real_store, cache):
    records = evaluate(EvaluateConfig(str(run_dir / "snapshots" / "000004"), str(real_store), metrics=("msssim",),
                                      n=8, device="cpu", cache_dir=str(cache), progress=False))
    assert [(r["snapshot"], r["metric"]) for r in records] == [("000004", "msssim")]
    assert 0 < records[0]["results"]["msssim"] <= 1


def test_growing_run_against_a_folder_prepares_the_reals_at_each_resolution(real_store, tmp_path):
    run = tmp_path / "20260101-000000-growing"
    for kimg, stage in ((0, 16), (4, 32)):  # a progressive run's snapshots, 16 px then 32 px
        G = PGGANGenerator(PGGANConfig(resolution=32, fmap_base=64, fmap_max=16))
        G.set_stage(stage)
        G.save_pretrained(run / "snapshots" / f"{kimg:06d}" / "G_ema")
    reals = write_folder(tmp_path / "reals", PreparedStore(real_store).images(32)[:16])
    records = evaluate(EvaluateConfig(str(run), str(reals), metrics=("msssim",), n=8, device="cpu",
                                      cache_dir=str(tmp_path / "cache"), progress=False,  # its own stores
                                      report=str(tmp_path / "report")))
    assert [r["resolution"] for r in records] == [16, 32]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "000000 (16 px)" in page and "000004 (32 px)" in page


needs_isic = pytest.mark.skipif(not ISIC or not pathlib.Path(ISIC).is_dir(), reason="LESION_SAMPLE_ISIC2017 not set")


@needs_isic
def test_folder_against_real_isic_sample(cache, tmp_path):
    images, _, _ = generate_phantoms(8, 32, seed=3)
    generated = write_folder(tmp_path / "generated", images)
    result = run_app(generated, ISIC, "--metrics", "swd,msssim", "--n", "8", cache=cache)
    assert result.returncode == 0, result.stderr
    assert "swd_real_baseline_avg" in result.stdout and "msssim_real" in result.stdout
    # The ISIC tree was prepared once into the cache at the generated resolution.
    assert [p.name.endswith("-32") for p in (cache / "stores").iterdir()] == [True]


@needs_isic
@pytest.mark.slow  # Inception on CPU
def test_folder_against_real_isic_sample_with_fid(cache, tmp_path):
    images, _, _ = generate_phantoms(6, 64, seed=3)
    generated = write_folder(tmp_path / "generated", images)
    out = tmp_path / "result.json"
    result = run_app(generated, ISIC, "--metrics", "fid,pr", "--n", "6", "--json", out, cache=cache)
    assert result.returncode == 0, result.stderr
    records = {r["metric"]: r for r in json.loads(out.read_text())}
    assert records["fid"]["results"]["fid"] > 1.0 and records["fid"]["num_real"] == 6
    assert 0.0 <= records["pr"]["results"]["precision"] <= 1.0
    assert "rank-deficient" in result.stdout


def test_clear_errors(real_store, cache, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_app(empty, real_store, cache=cache)
    assert result.returncode == 1 and "no images" in result.stderr and "Traceback" not in result.stderr

    def check(generated, match, **options):
        config = EvaluateConfig(str(generated), str(real_store), device="cpu", cache_dir=str(cache), progress=False, **options)
        with pytest.raises((EvaluationError, ValueError), match=match):
            evaluate(config)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    check(broken, "a.png")
    one = write_folder(tmp_path / "one", generate_phantoms(1, 32, seed=0)[0])
    check(one, "msssim needs at least 2 generated images", metrics=("msssim",))
    check(one, "unknown metric 'fidd'", metrics=("fidd",))
    check(one, "--bootstrap must be 0", bootstrap=-1)
    check(tmp_path / "missing", "does not exist")


@dataclasses.dataclass
class StandInConfig:
    resolution: int = 32
    z_dim: int = 4
    num_classes: int = 3


@register
class StandInGenerator(Pretrained, torch.nn.Module):
    """The generator protocol, minimally: G(z, labels) -> [-1, 1] images at G.resolution."""

    config_class = StandInConfig
    seen_labels: list = []

    def __init__(self, config):
        super().__init__()
        self.config, self.z_dim, self.num_classes, self.resolution = config, config.z_dim, config.num_classes, config.resolution
        self.colour = torch.nn.Linear(config.z_dim + config.num_classes, 3)

    def forward(self, z, labels=None):
        StandInGenerator.seen_labels += labels.tolist()
        x = torch.cat([z, torch.nn.functional.one_hot(labels, self.num_classes).float()], 1)
        base = torch.tanh(self.colour(x))[:, :, None, None]
        ramp = torch.linspace(-0.5, 0.5, self.resolution)
        return (base + ramp[None, None, :, None] * ramp[None, None, None, :]).clamp(-1, 1)


def test_model_directory_with_stand_in_conditional_generator(real_store, cache, tmp_path):
    model = tmp_path / "model"
    StandInGenerator(StandInConfig()).save_pretrained(model)
    StandInGenerator.seen_labels = []
    config = EvaluateConfig(str(model), str(real_store), metrics=("msssim",), n=6, batch_size=4, device="cpu",
                            cache_dir=str(cache), progress=False)
    first = evaluate(config)
    assert first[0]["results"]["msssim"] > 0 and first[0]["resolution"] == 32
    # Generated once for every pass, classes in turn; the last batch padded with copies of image 5.
    assert StandInGenerator.seen_labels == [0, 1, 2, 0, 1, 2, 2, 2]
    assert evaluate(config)[0]["results"] == first[0]["results"]  # same seed, same samples
    with pytest.raises(EvaluationError, match="generates 32 px"):
        evaluate(dataclasses.replace(config, resolution=64))


@pytest.mark.slow  # building and saving a ResNet-18 takes most of a minute on a CPU
def test_domain_fd_with_a_lesion_classifier(real_store, cache, tmp_path):
    pytest.importorskip("torchvision")
    from lesion_models.classifier import ClassifierConfig, LesionClassifier

    torch.manual_seed(0)
    LesionClassifier(ClassifierConfig(arch="resnet18")).save_pretrained(tmp_path / "classifier")
    generated = write_folder(tmp_path / "generated", generate_phantoms(6, 32, seed=7)[0])
    config = EvaluateConfig(str(generated), str(real_store), metrics=("domain_fd",), n=6, device="cpu",
                            domain_classifier=str(tmp_path / "classifier"), cache_dir=str(cache), progress=False)
    (record,) = evaluate(config)
    assert list(record["results"]) == ["domain_fd"] and record["results"]["domain_fd"] > 0


class PixelFeatures(torch.nn.Module):
    """Stands in for Inception's pool3 (raw pixels at 8 px), so these tests run in seconds."""

    def forward(self, images):
        return {"pool3": torch.nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)}


@pytest.fixture
def pixel_inception(monkeypatch):
    from lesion_metrics import FeatureExtractor, MetricOptions

    monkeypatch.setattr(MetricOptions, "inception_extractor", lambda self: FeatureExtractor("pixels-8", PixelFeatures()))


def test_copies_of_training_images_are_caught_and_drawn(real_store, cache, tmp_path, pixel_inception):
    training = PreparedStore(real_store).images(32)
    copier = write_folder(tmp_path / "copier", training[10:42])
    fresh = write_folder(tmp_path / "fresh", generate_phantoms(32, 32, seed=5)[0])

    def run(generated, report=None):
        config = EvaluateConfig(str(generated), str(real_store), metrics=("memorization", "spectral"), n=64, bootstrap=50,
                                device="cpu", cache_dir=str(cache), progress=False, report=report,
                                output=str(tmp_path / "out.json"))
        return {k: v for r in evaluate(config) for k, v in r["results"].items()}, json.loads((tmp_path / "out.json").read_text())

    copied, records = run(copier, report=str(tmp_path / "report"))
    assert copied["copy_rate_pixels"] == copied["copy_rate_inception"] == 1.0
    new, _ = run(fresh)
    assert new["copy_rate_pixels"] <= 0.1 and new["copy_rate_inception"] <= 0.1
    # Flags and intervals are data in the JSON, not only printed: 64 real images are too few for the
    # 1st percentile of their neighbour distances.
    memorization = next(r for r in records if r["metric"] == "memorization")
    assert "copy_rate_pixels" in memorization["flags"] and memorization["intervals"]["copy_rate_pixels"] == [1.0, 1.0]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "closest_copier_pixels.png" in page and "spectrum_copier.png" in page and "1.0000 [1.0000, 1.0000] *" in page
    pairs = np.asarray(Image.open(tmp_path / "report" / "closest_copier_pixels.png"))
    left, right = pairs[2:34, 2:34], pairs[2:34, 36:68]  # the first pair: nearest real, closest generated
    assert np.array_equal(left, right)


def test_per_class_figures_of_a_conditional_generator(real_store, cache, tmp_path, pixel_inception):
    model = tmp_path / "model"
    StandInGenerator(StandInConfig()).save_pretrained(model)
    config = EvaluateConfig(str(model), str(real_store), metrics=("per_class",), n=24, batch_size=8, device="cpu",
                            cache_dir=str(cache), progress=False, bootstrap=0)
    (record,) = evaluate(config)
    names = PreparedStore(real_store).class_names
    assert all(record["results"][f"fraction_generated[{name}]"] == pytest.approx(1 / 3) for name in names)
    assert all(f"fid[{name}]" in record["flags"] for name in names if f"fid[{name}]" in record["results"])
    assert f"fid[{names[0]}]" in record["results"] and "* fid[" in format_table([record])
