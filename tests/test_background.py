import pytest
import torch

from sslkit.augmentations.background import BackgroundRandom, BackgroundRemove, partner_permutation


def scenes(n=16, size=8, dtype=torch.float32):
    image = torch.rand(n, 3, size, size, dtype=dtype)
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    mask[:, :, 2:6, 2:6] = True
    mask[::2, :, 0, 0] = True  # masks differ between samples
    return {"image": image, "mask": mask}


@pytest.mark.parametrize("fill", ["grey", "random_grey", "mean", "black"])
def test_bg_rm_keeps_foreground_and_fills_background(fill):
    view = scenes()
    stage = BackgroundRemove(p=1.0, fill=fill, grey_level=0.3)
    out = stage(view)["image"]
    fg = view["mask"].expand_as(out)
    assert torch.equal(out[fg], view["image"][fg])
    for i in range(out.shape[0]):
        bg = out[i][~view["mask"][i].expand(3, -1, -1)].view(3, -1)
        if fill == "mean":
            expected = view["image"][i].mean((1, 2))
            assert torch.allclose(bg, expected.view(3, 1).expand_as(bg))
        else:
            level = {"grey": 0.3, "black": 0.0}.get(fill, float(stage.last_params["fill"][i]))
            assert torch.all(bg == level)


def test_bg_random_takes_partner_background_and_keeps_foreground():
    view = scenes()
    stage = BackgroundRandom(p=1.0, donor_hole="leak")
    out = stage(view)["image"]
    partner = stage.last_params["partner"]
    assert not torch.any(partner == torch.arange(len(partner)))
    for i, j in enumerate(partner.tolist()):
        fg = view["mask"][i].expand(3, -1, -1)
        assert torch.equal(out[i][fg], view["image"][i][fg])
        assert torch.equal(out[i][~fg], view["image"][j][~fg])


def test_bg_random_fills_the_donor_hole_with_the_donor_background_mean():
    view = scenes()
    stage = BackgroundRandom(p=1.0, donor_hole="mean")
    out = stage(view)["image"]
    for i, j in enumerate(stage.last_params["partner"].tolist()):
        hole = (view["mask"][j] & ~view["mask"][i]).expand(3, -1, -1)
        donor_bg = view["image"][j][~view["mask"][j].expand(3, -1, -1)].view(3, -1).mean(1)
        assert torch.allclose(out[i][hole].view(3, -1), donor_bg.view(3, 1).expand(3, int(hole[0].sum())))


def test_per_sample_probability_holds_statistically():
    stage = BackgroundRemove(p=0.3)
    chosen = []
    for _ in range(50):
        stage(scenes(n=64))
        chosen.append(stage.last_params["chosen"].float())
    rate = torch.cat(chosen).mean()
    assert abs(float(rate) - 0.3) < 0.03  # 3200 draws: standard error 0.008


def test_float16_images_and_clear_errors():
    view = scenes(dtype=torch.float16)
    out = BackgroundRandom(p=1.0)(view)["image"]
    assert out.dtype == torch.float16
    with pytest.raises(ValueError, match="needs a foreground mask"):
        BackgroundRemove(p=1.0)({"image": torch.rand(2, 3, 4, 4)})
    with pytest.raises(ValueError, match="does not match image"):
        BackgroundRemove(p=1.0)({"image": torch.rand(2, 3, 4, 4), "mask": torch.ones(2, 1, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="at least 2"):
        partner_permutation(1, torch.device("cpu"))
