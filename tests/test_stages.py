import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.augmentations import (
    ColorJitter,
    MoCoV2Views,
    RandomHorizontalFlip,
    RandomResizedCrop,
    View,
)


def blocky_batch(n=8, size=32):
    """Images whose every channel equals a blocky mask, so image and mask can be compared."""
    mask = torch.rand(n, 1, size // 8, size // 8) > 0.5
    mask = mask.repeat_interleave(8, 2).repeat_interleave(8, 3)
    image = (mask.expand(-1, 3, -1, -1).to(torch.uint8) * 255)
    return {"image": image, "mask": mask}


def test_recipe_output_shapes_dtypes_and_device():
    batch = blocky_batch()
    views = MoCoV2Views(crop_size=24, blur_p=0.5)(batch)
    assert len(views) == 2
    for view in views:
        assert view["image"].shape == (8, 3, 24, 24) and view["image"].dtype == torch.float32
        assert "mask" not in view  # no stage reads it: not cropped for nothing
        assert view["image"].device == batch["image"].device
    assert not torch.equal(views[0]["image"], views[1]["image"])
    from sslkit.augmentations import BackgroundRemove

    for view in MoCoV2Views(crop_size=24, background=[BackgroundRemove(p=0.5)])(batch):
        assert view["mask"].shape == (8, 1, 24, 24) and view["mask"].dtype == torch.bool


def test_flip_moves_mask_exactly_with_image():
    batch = blocky_batch()
    view = View([RandomHorizontalFlip(p=0.5)])(batch)
    assert torch.equal(view["image"][:, :1] > 0.5, view["mask"])
    flipped = [not torch.equal(view["mask"][i], batch["mask"][i]) for i in range(8)]
    assert any(flipped)  # some samples flipped, independently of the others


def test_crop_keeps_mask_aligned_with_image():
    batch = blocky_batch(n=16)
    view = View([RandomResizedCrop(32, scale=(0.2, 1.0)), RandomHorizontalFlip()])(batch)
    agreement = ((view["image"][:, :1] > 0.5) == view["mask"]).float().mean()
    assert agreement > 0.97  # only interpolated boundary pixels may differ


def test_crop_parameters_differ_per_sample():
    batch = {"image": torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32).repeat(8, 3, 1, 1) / 1024}
    out = View([RandomResizedCrop(16, scale=(0.1, 0.5))])(batch)["image"]
    assert len({round(float(x), 4) for x in out[:, 0, 0, 0]}) > 1


def test_photometric_stage_leaves_mask_untouched():
    batch = blocky_batch()
    view = View([ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)])(batch)
    assert torch.equal(view["mask"], batch["mask"])


def test_crop_larger_than_canvas_is_a_clear_error():
    with pytest.raises(ValueError, match="larger than the data's 32x32 image canvas"):
        MoCoV2Views(crop_size=64).check_canvas(32)
    with pytest.raises(ValueError, match="CenterCrop size 64 is larger than a 32x32 image"):
        MoCoV2Views(crop_size=64).evaluate(blocky_batch())


def test_mask_of_other_size_is_a_clear_error():
    batch = blocky_batch()
    batch["mask"] = batch["mask"][:, :, :16, :16]
    with pytest.raises(ValueError, match="does not match image"):
        View([RandomHorizontalFlip()])(batch)


def test_eval_view_is_deterministic_centre_crop():
    """Evaluation is torchvision's ``CenterCrop`` (canvas batches) or ``Resize(crop / 0.875)``
    then ``CenterCrop`` (whole images, ``main_lincls.py``), then normalisation."""
    import torchvision.transforms.functional as TF

    torch.manual_seed(0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    recipe = MoCoV2Views(crop_size=24, mean=mean, std=std)
    canvas = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a, b = recipe.evaluate({"image": canvas}), recipe.evaluate({"image": canvas})
    assert torch.equal(a, b)
    expected = TF.normalize(canvas[:, :, 4:28, 4:28].float() / 255, mean, std)
    assert torch.allclose(a, expected, atol=1e-6)
    whole = [torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8), torch.randint(0, 256, (3, 61, 30), dtype=torch.uint8)]
    out = recipe.evaluate({"image": whole})
    for image, got in zip(whole, out):  # the official pipelines resize PIL images: within one level of 255
        pil = TF.center_crop(TF.resize(Image.fromarray(image.permute(1, 2, 0).numpy()), 27), 24)
        reference = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()
        levels = (got * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)) * 255
        assert (levels - reference).abs().max() <= 1.0 + 1e-3 and (levels - reference).abs().mean() < 0.3


def test_recipes_are_not_part_of_checkpoints():
    import torch.nn as nn

    holder = nn.Module()
    holder.augment = MoCoV2Views(crop_size=32)
    holder.weight = nn.Parameter(torch.ones(2))
    state = holder.state_dict()
    assert list(state) == ["weight"]
    other = nn.Module()
    other.augment = MoCoV2Views(crop_size=24, blur_p=0.0)  # another recipe loads the same state
    other.weight = nn.Parameter(torch.zeros(2))
    other.load_state_dict(state)
    assert torch.equal(other.weight, torch.ones(2))


def test_the_stage_list_config_is_the_demo_recipe_bit_for_bit():
    """configs/demo_stages.yaml (the README's "any recipe as stages") builds, through the
    CLI, a recipe whose views and evaluation images equal the named MoCoV2Views of demo.yaml
    under the same seed: on a canvas batch and on whole images of different sizes."""
    import os

    from conftest import REPO
    from sslkit.commands.common import from_config

    demo = os.path.join(REPO, "configs", "demo.yaml")
    named, data = from_config([demo], [])
    staged, _ = from_config([demo, os.path.join(REPO, "configs", "demo_stages.yaml")], [])
    assert type(named.augment).__name__ == "MoCoV2Views" and type(staged.augment).__name__ == "RepeatedView"
    for model in (named, staged):
        model.augment.use_statistics(data.mean, data.std)
    canvas = {"image": torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)}
    whole = {"image": [torch.randint(0, 256, (3, 40 + 7 * i, 50 - 3 * i), dtype=torch.uint8) for i in range(4)]}
    for batch in (canvas, whole):
        outputs = []
        for model in (named, staged):
            torch.manual_seed(5)
            outputs.append([view["image"] for view in model.augment(batch)] + [model.augment.evaluate(batch)])
        assert len(outputs[0]) == len(outputs[1]) == 3
        for a, b in zip(*outputs):
            assert torch.equal(a, b)


def test_the_readme_shows_the_shipped_stage_list():
    import os

    from conftest import REPO

    config = open(os.path.join(REPO, "configs", "demo_stages.yaml")).read()
    shown = config[config.index("model:"):]
    assert shown in open(os.path.join(REPO, "README.md")).read()


def test_row_by_row_and_batched_photometric_paths_agree(monkeypatch):
    """On a CPU, large images go through the colour stages one image at a time and small ones
    as a batch; both must give the same pixels for the same draws."""
    from sslkit.augmentations import ColorJitter, RandomGaussianBlur, RandomGrayscale
    from sslkit.augmentations import images as batch_images

    image = torch.rand(6, 3, 72, 72)
    recipe = View([ColorJitter(p=0.8), RandomGrayscale(p=0.5), RandomGaussianBlur(p=0.5)])
    outputs = []
    for threshold in (1, 10**9):  # every image row by row, then none
        monkeypatch.setattr(batch_images, "ROW_BY_ROW_ELEMENTS", threshold)
        torch.manual_seed(3)
        outputs.append(recipe({"image": image.clone()})["image"])
    assert batch_images.row_by_row(image) is False
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)
    assert not torch.allclose(outputs[0], image)
