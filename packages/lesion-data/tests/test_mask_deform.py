import numpy as np
import pytest
from lesion_data.mask_deform import deform_masks


def disc(size=64, radius=14, centre=(32, 32)):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2).astype(np.uint8)


def test_identity_settings_return_the_mask():
    mask = disc()
    out = deform_masks(mask, 3, rotation=0, scale=(1, 1), shift=0, elastic=0)
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    assert (out == mask).all()


def test_variants_differ_stay_plausible_and_are_seeded():
    mask = disc()
    out = deform_masks(mask, 16, seed=3)
    again = deform_masks(mask, 16, seed=3)
    assert (out == again).all()
    assert len({o.tobytes() for o in out}) == 16  # all different
    area = out.reshape(16, -1).sum(1) / mask.sum()
    assert ((area > 0.8**2 * 0.8) & (area < 1.2**2 * 1.2)).all()  # scale range squared, elastic slack
    assert set(np.unique(out)) <= {0, 1}


def test_scaling_and_rotation_act_as_asked():
    mask = np.zeros((64, 64), np.uint8)
    mask[24:40, 8:56] = 1  # a horizontal bar
    bigger = deform_masks(mask, 1, rotation=0, scale=(1.2, 1.2), shift=0, elastic=0)[0]
    assert bigger.sum() / mask.sum() == pytest.approx(1.44, rel=0.08)
    turned = deform_masks(mask, 12, rotation=180, scale=(1, 1), shift=0, elastic=0, seed=0)
    angles = []
    for variant in turned:
        rows, cols = np.nonzero(variant)
        cov = np.cov(np.stack([cols - cols.mean(), rows - rows.mean()]))
        vec = np.linalg.eigh(cov)[1][:, -1]  # principal axis of the bar
        angles.append(np.degrees(np.arctan2(vec[1], vec[0])) % 180)
        assert variant.sum() == pytest.approx(mask.sum(), rel=0.1)  # rotation keeps the area
    assert np.ptp(angles) > 45  # orientations actually vary


def test_rotation_is_rigid_on_non_square_masks():
    mask = disc(size=64, radius=10)[:, :]  # a disc in a wide frame
    wide = np.zeros((40, 100), np.uint8)
    wide[:, 30:70] = mask[12:52, 12:52]
    out = deform_masks(wide, 8, rotation=180, scale=(1, 1), shift=0, elastic=0, seed=1)
    for variant in out:
        rows, cols = np.nonzero(variant)
        assert np.ptp(rows) == pytest.approx(np.ptp(cols), abs=2)  # a disc stays a disc
        assert int(variant.sum()) == pytest.approx(int(wide.sum()), rel=0.06)


def test_accepts_0_255_masks_and_rejects_bad_input():
    assert deform_masks(disc() * 255, 1, elastic=0, rotation=0, scale=(1, 1), shift=0)[0].max() == 1
    with pytest.raises(ValueError, match=r"mask must be \(H, W\)"):
        deform_masks(np.zeros((2, 8, 8)), 1)
    with pytest.raises(ValueError, match="n must be"):
        deform_masks(disc(), 0)
