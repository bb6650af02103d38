import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.data import CIFAR10, ImageDecodeError, ImageFolderData, ImageFolderDataset


def make_tree(root, sizes=((40, 30), (50, 50)), masks=None):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(np.full((h, w, 3), (40 * i + 20) % 256, np.uint8)).save(root / cls / f"{i}.jpg")
            if masks is not None:
                (masks / cls).mkdir(parents=True, exist_ok=True)
                m = np.zeros((h, w), np.uint8)
                m[: h // 2] = 255
                Image.fromarray(m).save(masks / cls / f"{i}.png")


def test_folder_items_follow_the_contract(tmp_path):
    make_tree(tmp_path / "img", masks=tmp_path / "mask")
    ds = ImageFolderDataset(tmp_path / "img", 16, tmp_path / "mask")
    item = ds[1]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (1, 16, 16) and item["mask"].dtype == torch.bool
    assert item["mask"][0, :8].all() and not item["mask"][0, 8:].any()  # top half, resized with it
    assert ds.classes == ["cat", "dog"] and int(ds[3]["label"]) == 1


def test_corrupt_image_error_names_the_file(tmp_path):
    make_tree(tmp_path / "img")
    bad = tmp_path / "img" / "dog" / "1.jpg"
    bad.write_bytes(b"not a jpeg at all")
    ds = ImageFolderDataset(tmp_path / "img", 16)
    with pytest.raises(ImageDecodeError, match=str(bad)):
        ds[3]


def test_mask_of_any_size_is_resized_nearest_to_its_image(tmp_path):
    make_tree(tmp_path / "img", masks=tmp_path / "mask")
    small = np.zeros((10, 8), np.uint8)
    small[:5] = 255  # top half, at a fifth of the image's resolution
    Image.fromarray(small).save(tmp_path / "mask" / "cat" / "0.png")
    item = ImageFolderDataset(tmp_path / "img", 16, tmp_path / "mask")[0]
    assert item["mask"][0, :8].all() and not item["mask"][0, 8:].any()
    assert set(torch.unique(item["mask"].to(torch.uint8)).tolist()) <= {0, 1}


def test_missing_mask_is_an_error_or_an_opt_in_full_foreground(tmp_path):
    make_tree(tmp_path / "img", masks=tmp_path / "mask")
    (tmp_path / "mask" / "dog" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask for image '.*dog/1.jpg'.*missing_mask"):
        ImageFolderDataset(tmp_path / "img", 16, tmp_path / "mask")[3]
    ds = ImageFolderDataset(tmp_path / "img", 16, tmp_path / "mask", missing_mask="foreground")
    assert ds[3]["mask"].all() and bool(ds[3]["mask_missing"]) and not bool(ds[0]["mask_missing"])


def test_missing_masks_are_counted_per_epoch(tmp_path):
    from helpers import tiny_moco, tiny_trainer

    sizes = [(32, 32)] * 8
    make_tree(tmp_path / "data" / "train", sizes, masks=tmp_path / "masks" / "train")
    make_tree(tmp_path / "data" / "val", sizes[:2], masks=tmp_path / "masks" / "val")
    for name in ("0", "1", "2"):
        (tmp_path / "masks" / "train" / "cat" / f"{name}.png").unlink()
    data = ImageFolderData(root=str(tmp_path / "data"), image_size=32, mask_root=str(tmp_path / "masks"),
                           missing_mask="foreground", batch_size=8, num_workers=0, pin_memory=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1, max_steps=-1, limit_val_batches=0)
    with pytest.warns(UserWarning, match="3 training images had no mask"):
        trainer.fit(tiny_moco(queue_size=64, bn_splits=2), data)
    assert float(trainer.callback_metrics["data/missing_masks"]) == 3


def test_missing_roots_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        ImageFolderData(root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        CIFAR10(root=str(tmp_path / "nowhere")).setup("fit")


def test_image_modes_are_converted_without_losing_the_image(tmp_path):
    from sslkit.data.decode import to_mode

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    sixteen = to_mode(Image.fromarray(ramp), "RGB")  # 16-bit: rescaled, not clipped to white
    values = np.asarray(sixteen)[..., 0]
    assert values.min() == 0 and values.max() == 255 and len(np.unique(values)) > 32
    rgba = Image.fromarray(np.zeros((4, 4, 4), np.uint8))  # fully transparent black
    assert (np.asarray(to_mode(rgba, "RGB")) == 128).all()  # composited over grey, not black
    grey = to_mode(Image.fromarray(np.full((4, 4), 77, np.uint8)), "RGB")
    assert (np.asarray(grey) == 77).all()


def test_unreadable_images_are_skipped_and_counted_when_asked(tmp_path):
    from helpers import tiny_moco, tiny_trainer

    sizes = [(32, 32)] * 8
    make_tree(tmp_path / "data" / "train", sizes)
    make_tree(tmp_path / "data" / "val", sizes[:2])
    (tmp_path / "data" / "train" / "dog" / "3.jpg").write_bytes(b"\\xff\\xd8 truncated jpeg")
    strict = ImageFolderData(root=str(tmp_path / "data"), image_size=32, batch_size=8, num_workers=0, pin_memory=False)
    strict.setup("fit")
    with pytest.raises(ImageDecodeError, match="dog/3.jpg"):
        [strict.train_set[i] for i in range(len(strict.train_set))]
    data = ImageFolderData(root=str(tmp_path / "data"), image_size=32, batch_size=8, num_workers=0,
                           pin_memory=False, bad_images="skip")
    trainer = tiny_trainer(tmp_path, max_epochs=1, max_steps=-1, limit_val_batches=0)
    with pytest.warns(UserWarning, match=r"1 unreadable training images skipped .*dog/3.jpg"):
        trainer.fit(tiny_moco(queue_size=64, bn_splits=2), data)
    assert float(trainer.callback_metrics["data/skipped_images"]) == 1
