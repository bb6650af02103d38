"""ImageNet-style input: crops from the whole image on the device, decoders that agree with
the PIL path, cached file lists, and the tools on whole images."""
import io
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from helpers import tiny_moco, tiny_trainer
from sslkit.augmentations import MoCoV2Views, RandomResizedCrop, View, eval_view
from sslkit.data import ImageDecodeError, ImageFolderData, ImageFolderDataset, decode_batch, list_image_folder
from sslkit.data.base import collate_dropping_skipped
from sslkit.data.decode import decode_bytes

SIZES = [(120, 80), (80, 120), (150, 100), (96, 96), (200, 60)]  # (width, height)


def photo(width, height, seed):
    """A smooth natural-ish RGB image (gradients and blobs, what JPEG is made for)."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(6 * x * g.uniform(0.5, 2) + g.uniform(0, 6)) + np.cos(5 * y * g.uniform(0.5, 2)) for _ in range(3)]
    return (np.stack(channels, -1) * 60 + 128).clip(0, 255).astype(np.uint8)


def make_tree(root, masks=None, sizes=SIZES, classes=("a", "b")):
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(photo(w, h, 10 * c + i)).save(root / cls / f"{i}.jpg", quality=90)
            if masks is not None:
                (masks / cls).mkdir(parents=True, exist_ok=True)
                m = np.zeros((h, w), np.uint8)
                m[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
                Image.fromarray(m).save(masks / cls / f"{i}.png")


def test_whole_images_are_yielded_at_their_own_size_and_batched_as_a_list(tmp_path):
    make_tree(tmp_path / "img", tmp_path / "mask")
    dataset = ImageFolderDataset(tmp_path / "img", None, tmp_path / "mask", index_cache=None)
    items = [dataset[i] for i in range(5)]
    assert [tuple(x["image"].shape) for x in items] == [(3, h, w) for w, h in SIZES]
    assert all(x["mask"].shape[-2:] == x["image"].shape[-2:] for x in items)
    batch = collate_dropping_skipped(items)
    assert isinstance(batch["image"], list) and isinstance(batch["mask"], list) and batch["label"].shape == (5,)


def test_the_edges_of_wide_images_reach_the_views_only_on_the_whole_image_path(tmp_path):
    """Red strips on the left and right quarter of 200 x 100 images: random crops from the
    whole image show them; crops from a centre-cropped 100 x 100 canvas never can."""
    (tmp_path / "img" / "x").mkdir(parents=True)
    image = np.full((100, 200, 3), 128, np.uint8)
    image[:, :25] = image[:, 175:] = (255, 0, 0)
    for i in range(4):
        Image.fromarray(image).save(tmp_path / "img" / "x" / f"{i}.png")
    recipe = View([RandomResizedCrop(32, scale=(0.2, 1.0))])

    def red_share(image_size):
        dataset = ImageFolderDataset(tmp_path / "img", image_size, index_cache=None)
        batch = collate_dropping_skipped([dataset[i % 4] for i in range(64)])
        views = recipe({"image": batch["image"]})["image"]
        red = (views[:, 0] > 0.9) & (views[:, 1] < 0.1)
        return float(red.flatten(1).any(1).float().mean())

    assert red_share(None) > 0.3
    assert red_share(100) == 0.0


def test_moco_trains_and_validates_on_whole_images(tmp_path):
    for split in ("train", "val"):
        make_tree(tmp_path / "data" / split, sizes=SIZES * 4)
    data = ImageFolderData(str(tmp_path / "data"), batch_size=8, num_workers=0, pin_memory=False, index_cache=None)
    assert data.whole_images
    model = tiny_moco(augment=MoCoV2Views(crop_size=32, blur_p=0.5), queue_size=64, batchnorm="plain")
    trainer = tiny_trainer(tmp_path, max_steps=-1, max_epochs=1)
    trainer.fit(model, data)
    assert int(model.queue.filled) == 40
    assert "val/knn_top1" in trainer.callback_metrics


def test_evaluation_view_resizes_then_centre_crops_as_main_lincls(tmp_path):
    """main_lincls.py: Resize(256) + CenterCrop(224) on the PIL image; here 73 and 64."""
    make_tree(tmp_path / "img")
    dataset = ImageFolderDataset(tmp_path / "img", None, index_cache=None)
    batch = collate_dropping_skipped([dataset[i] for i in range(5)])
    ours = eval_view(64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(batch)["image"]  # resize to 64 / 0.875 = 73
    reference = T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor()])
    for image, view in zip(batch["image"], ours):
        expected = reference(Image.fromarray(image.permute(1, 2, 0).numpy()))
        assert view.shape == expected.shape == (3, 64, 64)
        assert (view - expected).abs().max() <= 2 / 255 + 1e-6  # PIL's and torch's antialiased bilinear


def jpeg_bytes(array, **kwargs):
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=90, **kwargs)
    return out.getvalue()


def pil_pixels(data):
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("kind", ["rgb", "grey", "cmyk", "progressive", "exif_rotated", "png_rgba", "png_16bit"])
def test_decoders_give_the_pil_path_pixels(kind):
    image = photo(64, 48, 3)
    if kind == "grey":
        data = jpeg_bytes(image[..., 0])
    elif kind == "cmyk":
        out = io.BytesIO()
        Image.fromarray(image).convert("CMYK").save(out, "JPEG", quality=90)
        data = out.getvalue()
    elif kind == "progressive":
        data = jpeg_bytes(image, progressive=True)
    elif kind == "exif_rotated":  # orientation 6: neither path rotates, as torchvision's ImageFolder does not
        exif = Image.Exif()
        exif[0x0112] = 6
        data = jpeg_bytes(image, exif=exif.tobytes())
    elif kind == "png_rgba":
        out = io.BytesIO()
        Image.fromarray(np.dstack([image, np.full(image.shape[:2], 128, np.uint8)]), "RGBA").save(out, "PNG")
        data = out.getvalue()
    else:
        out = io.BytesIO()
        Image.fromarray((image[..., 0].astype(np.uint16) * 200)).save(out, "PNG")
        data = out.getvalue()
    reference = decode_bytes(data, "x", "pil")
    fast = decode_bytes(data, "x", "torchvision")
    assert fast.shape == reference.shape == (3, 48, 64)
    assert (fast.int() - reference.int()).abs().max() <= 1, kind
    if kind.startswith("png"):
        assert torch.equal(fast, reference)  # PNGs always take the PIL path


def test_device_decoder_leaves_jpegs_encoded_until_the_batch_is_on_its_device(tmp_path):
    make_tree(tmp_path / "img", tmp_path / "mask")
    (tmp_path / "img" / "b" / "9.png").write_bytes(b"")  # not a JPEG: decoded in the worker (here: unreadable)
    os.remove(tmp_path / "img" / "b" / "9.png")
    encoded = ImageFolderDataset(tmp_path / "img", None, tmp_path / "mask", decoder="device", index_cache=None)
    decoded = ImageFolderDataset(tmp_path / "img", None, tmp_path / "mask", decoder="pil", index_cache=None)
    items = [encoded[i] for i in range(5)]
    assert all(x["image"].dim() == 1 for x in items)  # the file's bytes
    assert [tuple(x["mask"].shape) for x in items] == [(1, h, w) for w, h in SIZES]  # sized from the JPEG header
    batch = decode_batch(collate_dropping_skipped(items))
    for image, reference in zip(batch["image"], [decoded[i]["image"] for i in range(5)]):
        assert (image.int() - reference.int()).abs().max() <= 1


def test_a_corrupt_jpeg_is_named_or_skipped_on_every_decoder(tmp_path):
    make_tree(tmp_path / "img")
    bad = tmp_path / "img" / "b" / "2.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:200])  # header intact, image data cut
    for decoder in ("pil", "torchvision"):
        dataset = ImageFolderDataset(tmp_path / "img", None, decoder=decoder, index_cache=None)
        with pytest.raises(ImageDecodeError, match="b/2.jpg"):
            dataset[7]
    device = ImageFolderDataset(tmp_path / "img", None, decoder="device", index_cache=None)
    batch = collate_dropping_skipped([device[i] for i in range(5, 10)])
    with pytest.raises(ImageDecodeError, match="b/2.jpg"):
        decode_batch(dict(batch))
    kept = decode_batch(dict(batch), "skip")
    assert len(kept["image"]) == 4 and kept["label"].shape == (4,) and "b/2.jpg" in kept["skipped"][0]


def test_file_lists_are_cached_until_the_tree_changes(tmp_path, caplog):
    make_tree(tmp_path / "img")
    cache = tmp_path / "cache"
    classes, samples = list_image_folder(tmp_path / "img", cache)
    assert classes == ["a", "b"] and len(samples) == 10 and len(list(cache.glob("*.json"))) == 1
    caplog.set_level("INFO")
    again = list_image_folder(tmp_path / "img", cache)
    assert again == (classes, samples) and "from the cache" in caplog.text
    Image.fromarray(photo(40, 30, 99)).save(tmp_path / "img" / "b" / "new.jpg")
    caplog.clear()
    changed = list_image_folder(tmp_path / "img", cache)
    assert len(changed[1]) == 11 and "from the cache" not in caplog.text
    from torchvision.datasets import ImageFolder

    assert changed[1] == ImageFolder(str(tmp_path / "img")).samples  # torchvision's order and labels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a GPU")
def test_gpu_decoding_matches_the_pil_path(tmp_path):
    make_tree(tmp_path / "img")
    encoded = ImageFolderDataset(tmp_path / "img", None, decoder="device", index_cache=None)
    decoded = ImageFolderDataset(tmp_path / "img", None, decoder="pil", index_cache=None)
    batch = collate_dropping_skipped([encoded[i] for i in range(10)])
    batch["image"] = [x.cuda() for x in batch["image"]]
    out = decode_batch(batch)
    for image, i in zip(out["image"], range(10)):
        assert image.is_cuda
        assert (image.cpu().float() - decoded[i]["image"].float()).abs().mean() < 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_whole_image_recipe_runs_on_the_gpu(tmp_path):
    make_tree(tmp_path / "img")
    dataset = ImageFolderDataset(tmp_path / "img", None, index_cache=None)
    batch = collate_dropping_skipped([dataset[i] for i in range(10)])
    batch["image"] = [x.cuda() for x in batch["image"]]
    views = MoCoV2Views(crop_size=64)(batch)
    assert views[0]["image"].is_cuda and views[0]["image"].shape == (10, 3, 64, 64)


def ragged_scenes():
    g = torch.Generator().manual_seed(0)
    images, masks = [], []
    for w, h in SIZES:
        images.append(torch.rand(3, h, w, generator=g))
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = True
        masks.append(mask)
    return {"image": images, "mask": masks}


def test_background_stages_work_on_whole_images_of_different_sizes():
    from sslkit.augmentations import BackgroundRandom, BackgroundRemove, BackgroundSwap, RepeatedView
    from sslkit.augmentations.background import background_only, composite, resized

    batch = ragged_scenes()
    removed = BackgroundRemove(p=1.0, fill="black")(dict(batch))["image"]
    for out, image, mask in zip(removed, batch["image"], batch["mask"]):
        assert torch.equal(out[mask.expand(3, -1, -1)], image[mask.expand(3, -1, -1)])
        assert (out[~mask.expand(3, -1, -1)] == 0).all()
    stage = BackgroundRandom(p=1.0, donor_hole="mean")
    params = stage.draw(batch)
    mixed = stage(dict(batch), params)["image"]
    for i, j in enumerate(params["partner"].tolist()):
        donor = resized(background_only(batch["image"][j][None], batch["mask"][j][None], "mean")[0],
                        batch["image"][i].shape[-2:])
        background = ~batch["mask"][i].expand(3, -1, -1)
        assert j != i and torch.allclose(mixed[i][background], donor[background])
    swap = BackgroundSwap(p=1.0)
    views = RepeatedView(View([BackgroundRemove(p=1.0), RandomResizedCrop(24)]), 2, background_swap=swap)(batch)
    assert views[0]["image"].shape == (5, 3, 24, 24) and views[1]["hard_negative"].shape == (5, 3, 24, 24)
    inputs = swap(dict(batch))
    for i, j in enumerate(inputs.params["foreground_donor"].tolist()):  # another object on the query's background
        size = batch["image"][i].shape[-2:]
        own = background_only(batch["image"][i][None], batch["mask"][i][None], "mean")[0]
        expected = composite(resized(batch["image"][j], size), resized(batch["mask"][j], size, nearest=True), own)
        assert torch.allclose(inputs.negative["image"][i], expected)


def test_preview_runs_an_eight_gpu_imagenet_config_on_this_cpu(tmp_path, capsys):
    """Inspection tools need the model and the data only: the config's trainer (8 GPUs) is
    not built, and the 'original' column shows whole images."""
    from conftest import REPO
    from sslkit.cli import main

    for split in ("train", "val"):
        make_tree(tmp_path / "data" / split)
    main(["preview", "-c", os.path.join(REPO, "configs", "mocov2_imagenet.yaml"),
          f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.num_workers=0",
          "--data.init_args.batch_size=4", "--data.init_args.index_cache=null", "--num_images", "3",
          "--out", str(tmp_path / "views.png")])
    assert "3 columns x 3 images" in capsys.readouterr().out  # original (whole images) and 2 views
    assert (tmp_path / "views.png").stat().st_size > 0
