
import pytest
import torch

from sslkit.data import SyntheticScenes, render_scenes
from sslkit.data.synthetic import SHAPES, TEXTURES, _shape_masks


def test_scenes_are_deterministic_in_seed_and_index():
    a = render_scenes(3, "train", torch.tensor([7, 11]))
    b = render_scenes(3, "train", torch.arange(12))
    assert torch.equal(a["image"], b["image"][[7, 11]])
    assert torch.equal(a["mask"], b["mask"][[7, 11]])
    c = render_scenes(4, "train", torch.tensor([7, 11]))
    assert not torch.equal(a["image"], c["image"])
    d = render_scenes(3, "val", torch.tensor([7, 11]))
    assert not torch.equal(a["image"], d["image"])


def test_mask_covers_exactly_the_uniformly_coloured_object():
    out = render_scenes(0, "train", torch.arange(64), noise=0.0)
    for image, mask in zip(out["image"].float(), out["mask"][:, 0]):
        fg = image[:, mask]
        assert 0 < mask.sum() < mask.numel()
        assert fg.std(dim=1).max() == 0  # one flat colour inside the mask, without noise
        colour = fg[:, :1]
        bg = image[:, ~mask]
        # the object's colour is (almost) never in the background: the mask holds all of it
        assert ((bg == colour).all(0)).float().mean() < 0.05


@pytest.mark.parametrize(
    "shape, inside, outside",
    [
        ("disk", [(0.0, 0.0), (0.8, 0.0)], [(0.7, 0.7)]),
        ("square", [(0.6, 0.6), (0.0, 0.0)], [(0.8, 0.0)]),
        ("ring", [(0.75, 0.0)], [(0.0, 0.0), (0.99, 0.0)]),
        ("plus", [(0.0, 0.8), (0.8, 0.0)], [(0.6, 0.6)]),
        # edges 0.5 from the centre with outward normals at 90, 210 and 330 degrees
        ("triangle", [(0.0, 0.0), (0.0, -0.9)], [(0.0, 0.6), (0.6, 0.0)]),
    ],
)
def test_shape_families_hand_checked_points(shape, inside, outside):
    label = torch.tensor([SHAPES.index(shape)])
    for points, expected in ((inside, True), (outside, False)):
        for u, v in points:
            hit = _shape_masks(label, torch.tensor([[[u]]]), torch.tensor([[[v]]]))
            assert bool(hit) is expected, (shape, u, v)


def test_labels_cover_all_classes_and_background_cue_knob():
    out = render_scenes(0, "train", torch.arange(2000), num_classes=5)
    counts = torch.bincount(out["label"], minlength=5)
    assert counts.min() > 300
    tied = render_scenes(0, "train", torch.arange(500), num_classes=5, background_class_correlation=1.0)
    assert torch.equal(tied["texture"], tied["label"] % len(TEXTURES))
    free = render_scenes(0, "train", torch.arange(500), num_classes=5)
    assert (free["texture"] == free["label"] % len(TEXTURES)).float().mean() < 0.5


def test_datamodule_batches_follow_the_contract():
    dm = SyntheticScenes(num_train=64, num_val=32, batch_size=16, image_size=24)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (16, 3, 24, 24)
    assert batch["mask"].dtype == torch.bool and batch["mask"].shape == (16, 1, 24, 24)
    assert batch["label"].dtype == torch.long and batch["index"].dtype == torch.long
    bank, val = dm.val_dataloader()
    assert len(bank.dataset) == 64 and len(val.dataset) == 32


def test_invalid_class_count():
    with pytest.raises(ValueError, match="num_classes"):
        render_scenes(0, "train", torch.arange(2), num_classes=len(SHAPES) + 1)
