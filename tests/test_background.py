import pytest
import torch
import torchvision.transforms.functional as TF

from sslkit.augmentations import (
    BackgroundRandom,
    BackgroundRemove,
    BackgroundSwap,
    MoCoV2Views,
    MultiView,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RepeatedView,
    View,
)
from helpers import record_draws
from sslkit.augmentations.background import partner_permutation


def scenes(n=16, size=8, dtype=torch.float32):
    image = torch.rand(n, 3, size, size, dtype=dtype)
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    mask[:, :, size // 4:3 * size // 4, size // 4:3 * size // 4] = True
    mask[::2, :, 0, 0] = True  # masks differ between samples
    return {"image": image, "mask": mask}


def pixels(image, where):
    """The ``[3, n]`` pixels of one ``[3,H,W]`` image where the ``[1,H,W]`` mask is True."""
    return image[where.expand(3, -1, -1)].view(3, -1)


@pytest.mark.parametrize("fill", ["grey", "random_grey", "image_mean", "dataset_mean", "black", "blur"])
def test_bg_rm_keeps_foreground_bit_identical_and_fills_background(fill):
    view = scenes()
    stage = BackgroundRemove(p=1.0, fill=fill, grey_level=0.3, dataset_mean=(0.1, 0.2, 0.3), blur_sigma=0.25)
    params = stage.draw(view)
    out = stage(view, params)["image"]
    fg = view["mask"].expand_as(out)
    assert torch.equal(out[fg], view["image"][fg])
    for i in range(out.shape[0]):
        background = ~view["mask"][i]
        bg = pixels(out[i], background)
        if fill == "image_mean":
            expected = view["image"][i].mean((1, 2)).view(3, 1).expand_as(bg)
        elif fill == "dataset_mean":
            expected = torch.tensor([0.1, 0.2, 0.3]).view(3, 1).expand_as(bg)
        elif fill == "blur":
            sigma = 0.25 * 8
            blurred = TF.gaussian_blur(view["image"][i], [13, 13], [sigma, sigma])
            expected = pixels(blurred, background)
        else:
            level = {"grey": 0.3, "black": 0.0}.get(fill, float(params["grey"][i]))
            expected = torch.full_like(bg, level)
        assert torch.allclose(bg, expected, atol=1e-5)


def test_bg_random_takes_partner_background_and_keeps_foreground():
    view = scenes()
    stage = BackgroundRandom(p=1.0, donor_hole="leak")
    params = stage.draw(view)
    out = stage(view, params)["image"]
    partner = params["partner"]
    assert not torch.any(partner == torch.arange(len(partner)))
    for i, j in enumerate(partner.tolist()):
        fg = view["mask"][i].expand(3, -1, -1)
        assert torch.equal(out[i][fg], view["image"][i][fg])
        assert torch.equal(out[i][~fg], view["image"][j][~fg])


def test_bg_random_fills_the_donor_hole_with_the_donor_background_mean():
    view = scenes()
    stage = BackgroundRandom(p=1.0, donor_hole="mean")
    params = stage.draw(view)
    out = stage(view, params)["image"]
    for i, j in enumerate(params["partner"].tolist()):
        hole = view["mask"][j] & ~view["mask"][i]
        donor_bg = pixels(view["image"][j], ~view["mask"][j]).mean(1, keepdim=True)
        assert torch.allclose(pixels(out[i], hole), donor_bg.expand(3, int(hole.sum())))


def test_bg_swaps_positive_and_hard_negative():
    view = scenes()
    swap = BackgroundSwap(p=1.0)
    made = swap(view)
    image, mask = view["image"], view["mask"]
    assert made.query["image"] is image
    assert made.negative_valid.all()
    bg_donor = made.params["background_donor"].tolist()
    fg_donor = made.params["foreground_donor"].tolist()
    for i in range(len(image)):
        j, k = bg_donor[i], fg_donor[i]
        assert j != i and k != i
        positive, negative = made.positive["image"][i], made.negative["image"][i]
        # positive: own object, the donor's background where the donor has background
        assert torch.equal(pixels(positive, mask[i]), pixels(image[i], mask[i]))
        assert torch.equal(pixels(positive, ~mask[i] & ~mask[j]), pixels(image[j], ~mask[i] & ~mask[j]))
        # negative: the foreign object, and the query's own background around it
        assert torch.equal(pixels(negative, mask[k]), pixels(image[k], mask[k]))
        assert torch.equal(pixels(negative, ~mask[k] & ~mask[i]), pixels(image[i], ~mask[k] & ~mask[i]))
        assert torch.equal(made.negative["mask"][i], mask[k])
        # where the query's own object was and the foreign one is not: its background mean
        hole = mask[i] & ~mask[k]
        own_bg = pixels(image[i], ~mask[i]).mean(1, keepdim=True)
        assert torch.allclose(pixels(negative, hole), own_bg.expand(3, int(hole.sum())))


def test_bg_swaps_without_hard_negative_and_with_p_zero():
    view = scenes()
    made = BackgroundSwap(p=1.0, hard_negative=False)(view)
    assert made.negative is None and not made.negative_valid.any()
    made = BackgroundSwap(p=0.0)(view)
    assert torch.equal(made.positive["image"], view["image"]) and not made.negative_valid.any()


def test_masks_outside_the_foreground_range_are_never_augmented():
    view = scenes()
    view["mask"][:4] = True            # all foreground
    view["mask"][4:8] = False          # all background
    for stage in (BackgroundRemove(p=1.0), BackgroundRandom(p=1.0)):
        params = stage.draw(view)
        out = stage(dict(view), params)["image"]
        assert torch.equal(out[:8], view["image"][:8])
        assert params["chosen"][8:].all()
    swap = BackgroundSwap(p=1.0)
    made = swap(view)
    assert not made.negative_valid[:8].any()
    assert torch.equal(made.positive["image"][:8], view["image"][:8])


@pytest.mark.parametrize("stage", [BackgroundRemove(p=0.3), BackgroundRandom(p=0.3), BackgroundSwap(p=0.3)])
def test_per_sample_probability_holds_statistically(stage):
    chosen = []
    for _ in range(50):
        chosen.append(stage.draw(scenes(n=64))["chosen"].float())
    rate = torch.cat(chosen).mean()
    assert abs(float(rate) - 0.3) < 0.03  # 3200 draws: standard error 0.008


def test_masks_follow_crops_and_flips_after_background_removal():
    batch = scenes(n=8, size=32)
    batch["mask"][:] = False
    batch["mask"][:, :, 8:24, 4:20] = True
    batch["image"] = batch["mask"].expand(-1, 3, -1, -1).float()  # object white...
    batch["image"][:, :, :, 28:] = 1.0                             # ...and a white background stripe
    view = View([BackgroundRemove(p=1.0, fill="black"), RandomResizedCrop(32, (0.3, 1.0)),
                 RandomHorizontalFlip(0.5)])
    out = view(batch)
    # after BG_RM the image is white exactly on the object; after crop and flip, where the mask moved
    disagreement = ((out["image"][:, 0] > 0.5) != out["mask"][:, 0]).float().mean()
    assert disagreement < 0.02


def test_float16_images_and_clear_errors():
    view = scenes(dtype=torch.float16)
    for stage in (BackgroundRandom(p=1.0), BackgroundRemove(p=1.0, fill="blur"), BackgroundRemove(p=1.0)):
        assert stage(view)["image"].dtype == torch.float16
    assert BackgroundSwap(p=1.0)(view).negative["image"].dtype == torch.float16
    with pytest.raises(ValueError, match="needs a foreground mask"):
        BackgroundRemove(p=1.0)({"image": torch.rand(2, 3, 4, 4)})
    with pytest.raises(ValueError, match="does not match image"):
        BackgroundRemove(p=1.0)({"image": torch.rand(2, 3, 4, 4), "mask": torch.ones(2, 1, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="at least 2"):
        partner_permutation(1, torch.device("cpu"))
    with pytest.raises(ValueError, match="p must be in"):
        BackgroundSwap(p=1.5)
    with pytest.raises(ValueError, match="foreground_range"):
        BackgroundRandom(foreground_range=(0.5, 0.2))


def test_multiview_feeds_query_positive_and_negative_to_the_right_recipes():
    batch = scenes(n=8, size=32)
    batch["image"] = (batch["image"] * 255).to(torch.uint8)
    identity = View([])
    recipe = MultiView([identity, RepeatedView(identity, 2)], background_swap=BackgroundSwap(p=1.0))
    draws = record_draws(recipe.background_swap)
    views = recipe(batch)
    swap = draws[-1]
    assert len(views) == 3
    query = batch["image"].float() / 255
    assert torch.equal(views[0]["image"], query)
    j = int(swap["background_donor"][0])
    shared_background = ~batch["mask"][0] & ~batch["mask"][j]
    for view in views[1:]:
        assert torch.equal(pixels(view["image"][0], shared_background), pixels(query[j], shared_background))
    assert views[1]["hard_negative"].shape == views[1]["image"].shape
    assert views[1]["hard_negative_valid"].all()


def test_moco_recipe_with_swap_makes_cropped_hard_negative():
    batch = scenes(n=8, size=32)
    views = MoCoV2Views(crop_size=24, blur_p=0.0, background_swap=BackgroundSwap(p=1.0))(batch)
    assert views[1]["hard_negative"].shape == (8, 3, 24, 24)
    assert "hard_negative" not in views[0]


def test_full_background_recipe_under_bf16_autocast():
    batch = scenes(n=8, size=32)
    batch["image"] = (batch["image"] * 255).to(torch.uint8)
    recipe = MoCoV2Views(crop_size=24, blur_p=0.5,
                         background=[BackgroundRemove(1.0, fill="blur"), BackgroundRandom(1.0)],
                         background_swap=BackgroundSwap(1.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = recipe(batch)
    for image in (views[0]["image"], views[1]["image"], views[1]["hard_negative"]):
        assert image.shape == (8, 3, 24, 24) and torch.isfinite(image.float()).all()


def test_background_partners_are_drawn_within_each_view_block():
    """In a one-pass RepeatedView the batch holds every view of the same images: a sample
    never takes its background from another view of itself."""
    index = partner_permutation(24, torch.device("cpu"), blocks=3)
    block = torch.arange(24) // 8
    assert torch.equal(index // 8, block)
    assert (index != torch.arange(24)).all()
