"""BG_Swaps (Ryali, Schwab, Morcos 2021, sec. 3): the hard negative is another image's object
on the query's background, the background *as the query's view shows it*. When BG_RM or
BG_Random fire on the query, the negative must carry the replacement, or background alone
would again tell the query from its negative."""
import pytest
import torch

from helpers import record_draws
from sslkit.augmentations import BackgroundRandom, BackgroundRemove, BackgroundSwap, MultiView, RepeatedView, View
from sslkit.augmentations.background import partner_permutation


def scenes(n=16, size=12):
    g = torch.Generator().manual_seed(3)
    image = torch.rand(n, 3, size, size, generator=g)
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    mask[:, :, size // 4:3 * size // 4, size // 4:3 * size // 4] = True
    mask[::2, :, 1, 1] = True
    return {"image": image, "mask": mask}


def background_stages(kind):
    return {"remove": [BackgroundRemove(p=1.0, fill="random_grey")],
            "random": [BackgroundRandom(p=1.0, donor_hole="leak")],
            "both": [BackgroundRemove(p=0.5, fill="black"), BackgroundRandom(p=0.5)]}[kind]


def shared_background(query_mask, negative_mask):
    """Pixels that are background in the query and not covered by the foreign object."""
    return (~query_mask & ~negative_mask).expand(-1, 3, -1, -1)


@pytest.mark.parametrize("kind", ["remove", "random", "both"])
@pytest.mark.parametrize("recipe", ["repeated", "separate"])
def test_the_negative_shows_the_query_background_as_the_query_view_shows_it(kind, recipe):
    swap = BackgroundSwap(p=1.0, hard_negative=True, donor_hole="leak")
    if recipe == "repeated":
        augment = RepeatedView(View(background_stages(kind)), 2, background_swap=swap)
    else:
        augment = MultiView([View(background_stages(kind)), View(background_stages(kind))], background_swap=swap)
    batch = scenes()
    torch.manual_seed(0)
    draws = record_draws(swap)
    views = augment(batch)
    donor = draws[-1]["foreground_donor"]
    valid = views[1]["hard_negative_valid"]
    assert valid.all()
    query, negative = views[0]["image"], views[1]["hard_negative"]
    negative_mask = batch["mask"][donor]
    where = shared_background(batch["mask"], negative_mask)
    assert torch.equal(negative[where], query[where])  # every negative, pixel for pixel
    assert not torch.equal(query[where], batch["image"][where])  # the stages did replace the background
    inside = negative_mask.expand(-1, 3, -1, -1)  # and the object is the foreign one
    assert torch.equal(negative[inside], batch["image"][donor][inside])


def test_the_negative_follows_the_query_on_whole_images_of_different_sizes():
    g = torch.Generator().manual_seed(0)
    sizes = [(20, 14), (14, 20), (16, 16), (24, 12)]
    batch = {"image": [torch.rand(3, h, w, generator=g) for h, w in sizes], "mask": []}
    for h, w in sizes:
        m = torch.zeros(1, h, w, dtype=torch.bool)
        m[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = True
        batch["mask"].append(m)
    swap = BackgroundSwap(p=1.0, donor_hole="leak")
    augment = MultiView([View([BackgroundRemove(p=1.0, fill="black")]), View([BackgroundRemove(p=1.0)])],
                        background_swap=swap)
    draws = record_draws(swap)
    views = augment(batch)
    for i, j in enumerate(draws[-1]["foreground_donor"].tolist()):
        size = batch["image"][i].shape[-2:]
        foreign = torch.nn.functional.interpolate(batch["mask"][j][None].float(), size=tuple(size),
                                                  mode="nearest-exact")[0] > 0.5
        where = (~batch["mask"][i] & ~foreign).expand(3, -1, -1)
        assert (views[0]["image"][i][where] == 0).all()  # the query shows a black background ...
        assert (views[1]["hard_negative"][i][where] == 0).all()  # ... and so does its negative


def test_background_stages_draw_partners_only_among_the_views_that_still_need_them():
    """Query and negative have their backgrounds already; the positives of a one-pass
    RepeatedView get BG_Random partners among themselves, never another view of the image."""
    index = partner_permutation(12, torch.device("cpu"), blocks=3)
    assert torch.equal(index // 4, torch.arange(12) // 4) and (index != torch.arange(12)).all()
    stage = BackgroundRandom(p=1.0)
    augment = RepeatedView(View([stage]), 3, background_swap=BackgroundSwap(p=1.0))
    draws = record_draws(stage)
    augment(scenes(n=8))
    partners = draws[-1]["partner"]  # the last call: the two positives, 8 images each
    assert partners.shape == (16,) and torch.equal(partners // 8, torch.arange(16) // 8)
