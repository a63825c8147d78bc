"""Files that must not pass silently: contact sheets in image folders, oversized images, masks
that are not binary masks."""

import warnings

import numpy as np
import pytest
from lesion_data import preprocess
from lesion_data.preprocess import BadInput, Task, binary_mask, load_mask, process, read_mask_folder
from lesion_data.readers import is_image_file, list_image_files, open_source
from PIL import Image


def test_contact_sheets_and_hidden_files_are_not_images(tmp_path, write_image):
    for name in ("a.png", "grid1.png", "b.JPG", "preview.png", "grid.png", "grid_pggan.png", "interpolation.png",
                 "PREVIEW.PNG", ".hidden.png", "x_superpixels.png", "sub/c.png", ".cache/d.png"):
        write_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.JPG", "grid1.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path, recursive=True)] == [
        "a.png", "b.JPG", "grid1.png", "sub/c.png"]
    assert is_image_file(tmp_path / "preview.jpg") and not is_image_file(tmp_path / "grid_x.png")
    # The folder reader (prepare_data, evaluate on a folder) follows the same rule.
    write_image(tmp_path / "sub" / "grid.png")
    write_image(tmp_path / "sub" / "preview.png")
    assert sorted(r.image.name for r in open_source(tmp_path / "sub").records) == ["c.png"]


def test_image_above_the_pixel_limit_is_one_line_naming_the_file(tmp_path, write_image, monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 1000)
    path = write_image(tmp_path / "big.png", size=(50, 40))
    with pytest.raises(BadInput) as info:
        process(Task(path, None, 8))
    assert str(info.value) == f"{path}: image is 50x40 (0 Mpx), above the 0 Mpx limit; downscale it first"
    mask = tmp_path / "big_mask.png"
    Image.fromarray(np.full((40, 50), 255, np.uint8)).save(mask)
    with pytest.raises(BadInput, match=f"^{mask}: mask is 50x40"):
        load_mask(mask)


def test_large_jpeg_decodes_at_reduced_scale_within_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 1000)
    rng = np.random.default_rng(0)
    path = tmp_path / "big.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as im:
        assert preprocess.fit_pixel_limit(im).size == (20, 16)  # 1/4 scale: 1/2 would be 1280 px
    image, _ = process(Task(path, None, 4))
    assert image.shape == (4, 4, 3)
    with pytest.raises(BadInput, match="unless --no-draft"):
        process(Task(path, None, 4, draft=False))


def test_pil_decompression_bomb_warning_never_escapes(tmp_path, write_image):
    path = write_image(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, 1000  # 1200 px: above PIL's limit, below twice it
        try:
            process(Task(path, None, 4))
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _mask(values, mode=None):
    return Image.fromarray(np.asarray(values), mode) if mode else Image.fromarray(np.asarray(values))


BOX = np.zeros((20, 20), np.uint8)
BOX[5:15, 5:15] = 1


@pytest.mark.parametrize("image", [_mask(BOX * 255), _mask(BOX), _mask(BOX.astype(bool)),
                                   _mask(BOX.astype(np.int32) * 65535, "I")], ids=["0-255", "0-1", "bool", "16bit"])
def test_binary_masks_pass_silently(image, tmp_path):
    mask, note = binary_mask(image, tmp_path / "m.png")
    assert note is None and mask.dtype == np.uint8 and np.array_equal(mask, BOX)


def test_grey_rgb_and_slightly_soft_masks_convert_with_one_warning(tmp_path):
    path = tmp_path / "m.png"
    mask, note = binary_mask(_mask(np.repeat(BOX[..., None] * 255, 3, 2)), path)
    assert np.array_equal(mask, BOX) and note == f"{path}: RGB mask with equal channels, read as grey-scale"
    soft = BOX * 255
    soft[5, 5:15] = 200  # 10 of 400 pixels: an antialiased edge
    mask, note = binary_mask(_mask(soft), path)
    assert np.array_equal(mask, BOX) and note.startswith(f"{path}: 2.5% of mask pixels are neither 0 nor 255")
    palette = _mask(BOX * 255).convert("P")
    assert np.array_equal(binary_mask(palette, path)[0], BOX)


@pytest.mark.parametrize("image, message", [
    (_mask(np.stack([BOX * 255, BOX * 0, BOX * 0], 2)), "colour mask (mode RGB, channels differ)"),
    (_mask(np.dstack([np.repeat(BOX[..., None] * 255, 3, 2), BOX * 255])), "mask has transparent pixels"),
    (_mask(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)), "not a binary mask ("),
], ids=["colour", "alpha", "photo"])
def test_images_that_are_not_masks_are_refused(image, message, tmp_path):
    path = tmp_path / "m.png"
    with pytest.raises(BadInput) as info:
        binary_mask(image, path)
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)


def test_mask_folder_for_synthesis(tmp_path):
    for name, values in (("a.png", BOX * 255), ("b.png", np.repeat(BOX[..., None] * 255, 3, 2)),
                         ("preview.png", np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))):
        Image.fromarray(values.astype(np.uint8)).save(tmp_path / name)
    names, masks, notes = read_mask_folder(tmp_path, 10)
    assert names == ["a", "b"] and masks.shape == (2, 10, 10) and masks.dtype == np.uint8
    assert np.array_equal(masks[0], BOX[1::2, 1::2]) and len(notes) == 1 and "b.png: RGB mask" in notes[0]
    tiny = np.zeros((20, 20), np.uint8)
    tiny[3, 3] = 255
    Image.fromarray(tiny).save(tmp_path / "c.png")
    notes = read_mask_folder(tmp_path, 4)[2]
    assert any(n.startswith(f"{tmp_path / 'c.png'}: the lesion vanishes at 4 px") for n in notes)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "d.png")
    with pytest.raises(BadInput, match=f"^{tmp_path / 'd.png'}: empty mask"):
        read_mask_folder(tmp_path, 10)
