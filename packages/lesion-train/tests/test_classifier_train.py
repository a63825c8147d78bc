import json

import numpy as np
import pytest
import torch
from lesion_data.phantom import generate_phantoms
from lesion_models.classifier import LesionClassifier
from lesion_train import classifier as trainer
from lesion_train.classifier import ClassifierTrainConfig, batch_indices, train_classifier, validation_score


def test_batch_indices_are_stateless_epochs_or_class_balanced():
    labels = np.array([0] * 90 + [1] * 7 + [2] * 3)
    first_epoch = np.concatenate([batch_indices(labels, s, 20, 0, False) for s in range(5)])
    assert sorted(first_epoch) == list(range(100))  # one epoch is a permutation
    np.testing.assert_array_equal(batch_indices(labels, 7, 20, 0, False), batch_indices(labels, 7, 20, 0, False))
    drawn = np.concatenate([batch_indices(labels, s, 64, 0, True) for s in range(50)])
    fractions = np.bincount(labels[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(fractions, 1 / 3, atol=0.03)


def test_validation_score_is_isic_mean_for_isic_classes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .8, .1], [.6, .3, .1], [.1, .1, .8], [.1, .1, .8]])
    # melanoma: positives .8,.3 vs negatives .1,.8,.1,.1 -> (3.5 + 3) / 8; SK: perfect.
    names = ("nevus", "melanoma", "seborrheic_keratosis")
    assert validation_score(labels, probs, names) == pytest.approx((6.5 / 8 + 1) / 2)


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared, oversubscribed CPU two intra-op threads run several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n=48, size=32):
    images, _, labels = generate_phantoms(n, size, seed=3, balanced=True)
    return images, labels


def test_training_writes_a_run_and_keeps_the_best_model(tmp_path):
    images, labels = _data(36)
    config = ClassifierTrainConfig(kimg=0.024, batch_size=8, eval_every_kimg=0.008, device="cpu")
    model, summary = train_classifier(config, tmp_path, images[:24], labels[:24], images[24:], labels[24:],
                                      progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert summary["steps"] == 3 and [r["step"] for r in log] == [1, 2, 3]
    assert summary["best_val_score"] == max(r["val_score"] for r in log)
    assert log[-1]["lr"] == 0.0 and log[0]["lr"] < config.lr  # cosine decay to zero
    assert (tmp_path / "best" / "model.safetensors").is_file() and not (tmp_path / "snapshots").exists()
    assert json.loads((tmp_path / "training_options.json").read_text())["arch"] == "resnet18"
    reloaded = LesionClassifier.from_pretrained(tmp_path / "best")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(reloaded(x), model(x))


@pytest.mark.slow
def test_training_learns_phantom_classes(tmp_path):
    images, labels = _data(160)
    config = ClassifierTrainConfig(kimg=0.32, batch_size=16, eval_every_kimg=0.08, lr=2e-3, device="cpu")
    _, summary = train_classifier(config, tmp_path, images[:120], labels[:120], images[120:], labels[120:],
                                  progress=False)
    assert summary["best_val_score"] > 0.8


def test_interrupted_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    images, labels = _data()
    config = ClassifierTrainConfig(kimg=0.024, batch_size=8, eval_every_kimg=0.016, device="cpu",
                                   keep_snapshots=True)
    full, _ = train_classifier(config, tmp_path / "full", images[:36], labels[:36], images[36:], labels[36:],
                               progress=False)

    real_check = trainer.runs.check_finite

    def crash_in_third_step(losses, step):  # after the snapshot taken at step 2
        if step == 2:
            raise trainer.runs.NonFiniteLossError("simulated crash")
        real_check(losses, step)

    monkeypatch.setattr(trainer.runs, "check_finite", crash_in_third_step)
    with pytest.raises(trainer.runs.NonFiniteLossError):
        train_classifier(config, tmp_path / "cut", images[:36], labels[:36], images[36:], labels[36:], progress=False)
    assert trainer.runs.latest_snapshot(tmp_path / "cut").name == "000000.016"
    monkeypatch.setattr(trainer.runs, "check_finite", real_check)
    resumed, summary = train_classifier(config, tmp_path / "cut", images[:36], labels[:36], images[36:],
                                        labels[36:], progress=False)
    assert summary["steps"] == 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_inputs_are_named():
    images, labels = _data(12)
    config = ClassifierTrainConfig(resolution=64, device="cpu")
    with pytest.raises(ValueError, match="train images: want"):
        train_classifier(config, "/tmp/never", images, labels, images, labels)
