import pytest
import torch
from torch import nn

from sslkit.data import SyntheticScenes
from sslkit.eval.backgrounds import BackgroundsChallenge, backgrounds_knn, challenge_donors, challenge_image


def test_donors_follow_the_variant():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    same = challenge_donors(labels, "mixed_same", seed=1)
    assert torch.equal(labels[same], labels) and not torch.any(same == torch.arange(8))
    rand = challenge_donors(labels, "mixed_rand", seed=1)
    assert not torch.any(rand == torch.arange(8))
    assert torch.equal(challenge_donors(labels, "only_fg"), torch.arange(8))
    with pytest.raises(ValueError, match="at least 2 images of class 3"):
        challenge_donors(torch.tensor([0, 0, 3]), "mixed_same")


def test_challenge_images_against_their_definition():
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    donor = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 2:5, 2:5] = True
    donor_mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    donor_mask[:, 4:7, 4:7] = True
    only_fg = challenge_image(image, mask, donor, donor_mask, "only_fg")
    assert torch.equal(only_fg[mask.expand(3, -1, -1)], image[mask.expand(3, -1, -1)])
    assert (only_fg[~mask.expand(3, -1, -1)] == 0).all()
    mixed = challenge_image(image, mask, donor, donor_mask, "mixed_rand")
    assert torch.equal(mixed[mask.expand(3, -1, -1)], image[mask.expand(3, -1, -1)])
    open_background = (~mask & ~donor_mask).expand(3, -1, -1)
    assert torch.equal(mixed[open_background], donor[open_background])
    hole = (donor_mask & ~mask).expand(3, -1, -1)
    donor_mean = donor.float()[~donor_mask.expand(3, -1, -1)].view(3, -1).mean(1)
    assert torch.allclose(mixed[hole].view(3, -1).float(), donor_mean.round().view(3, 1).expand(3, int(hole[0].sum())))


class BorderColour(nn.Module):
    """An encoder that sees only the image border, i.e. only the background."""

    def forward(self, images):
        border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
        return torch.cat([border.mean(-1), border.std(-1)], 1)


def test_a_background_only_encoder_has_a_large_bg_gap():
    data = SyntheticScenes(image_size=32, num_classes=4, num_backgrounds=4, background_contrast=0.15, saturation=0.3,
                           object_scale=(0.4, 0.5), rotation_range=30, num_train=400, num_val=200, batch_size=64,
                           background_class_correlation=1.0, val_background_class_correlation=1.0)
    data.setup("validate")
    results = backgrounds_knn(BorderColour(), lambda b: b["image"].float() / 255, data, k=10, temperature=0.1,
                              progress=False)
    assert results["original"] > 0.95 and results["mixed_same"] > 0.95
    assert results["mixed_rand"] < 0.45  # chance is 0.25; a random donor keeps the class 1 time in 4
    assert results["bg_gap"] == pytest.approx(results["mixed_same"] - results["mixed_rand"])


class Unmasked(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return {"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "label": torch.tensor(0)}

    def labels(self):
        return torch.zeros(2, dtype=torch.long)


def test_challenge_needs_masks_and_labels():
    with pytest.raises(ValueError, match="needs masks"):
        BackgroundsChallenge(Unmasked(), "mixed_rand")[0]
    with pytest.raises(TypeError, match="labels()"):
        BackgroundsChallenge([{"image": torch.zeros(3, 4, 4)}] * 2, "mixed_rand")
