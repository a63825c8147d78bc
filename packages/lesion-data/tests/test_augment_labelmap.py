import torch
from lesion_data.augment import apply_dihedral, random_dihedral
from lesion_data.labelmap import boundary_map, label_map, one_hot_label_map


def test_dihedral_codes_give_all_eight_symmetries():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    outs = {tuple(apply_dihedral(x, torch.tensor([c])).flatten().tolist()) for c in range(8)}
    expected = set()
    for k in range(4):
        r = torch.rot90(x, k, (-2, -1))
        expected |= {tuple(r.flatten().tolist()), tuple(r.flip(-1).flatten().tolist())}
    assert outs == expected and len(outs) == 8


def test_random_dihedral_same_transform_for_image_and_mask():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(32, 1, 8, 8, generator=g) > 0.5).float()
    images = torch.cat([masks * 2 - 1, masks, -masks], 1)  # image channels are functions of the mask
    out_i, out_m = random_dihedral(images, masks, torch.Generator().manual_seed(1))
    assert torch.equal(out_i[:, 0], out_m[:, 0] * 2 - 1) and torch.equal(out_i[:, 2], -out_m[:, 0])
    assert not torch.equal(out_m, masks)
    mask_only = random_dihedral(masks, None)[1]
    assert mask_only is None


def test_label_maps():
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 1:3, 1:3] = 1
    lm = label_map(mask, torch.tensor([0, 2]))
    assert lm.dtype == torch.long and lm.shape == (2, 4, 4)
    assert lm[0, 1, 1] == 1 and lm[1, 1, 1] == 3 and lm[:, 0, 0].tolist() == [0, 0]
    oh = one_hot_label_map(mask, torch.tensor([0, 2]), num_classes=3)
    assert oh.shape == (2, 4, 4, 4) and torch.equal(oh.argmax(1), lm) and torch.all(oh.sum(1) == 1)
    edges = boundary_map(lm)
    assert edges.shape == (2, 1, 4, 4)
    expected = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]).float()
    assert torch.equal(edges[0, 0], expected)
    assert boundary_map(torch.zeros(1, 4, 4, dtype=torch.long)).sum() == 0


def test_label_map_rejects_unknown_labels():
    import pytest

    with pytest.raises(ValueError, match="unknown"):
        label_map(torch.ones(1, 2, 2), torch.tensor([-1]))
    with pytest.raises(ValueError, match="out of range"):
        one_hot_label_map(torch.ones(1, 2, 2), torch.tensor([3]), num_classes=3)
