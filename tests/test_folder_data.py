import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.data import CIFAR10, ImageDecodeError, ImageFolderData, ImageFolderDataset


def make_tree(root, sizes=((40, 30), (50, 50)), masks=None):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(np.full((h, w, 3), 40 * i + 20, np.uint8)).save(root / cls / f"{i}.jpg")
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


def test_mask_of_other_size_names_both_files(tmp_path):
    make_tree(tmp_path / "img", masks=tmp_path / "mask")
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "mask" / "cat" / "0.png")
    ds = ImageFolderDataset(tmp_path / "img", 16, tmp_path / "mask")
    with pytest.raises(ValueError, match=r"mask '.*cat/0.png' is 7x7 but image '.*cat/0.jpg' is 40x30"):
        ds[0]


def test_missing_roots_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        ImageFolderData(root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        CIFAR10(root=str(tmp_path / "nowhere")).setup("fit")
