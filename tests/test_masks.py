import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.commands.masks import write_masks
from sslkit.commands.saliency import BorderContrastSaliency, SaliencyMasker, load_saliency_model
from sslkit.data.files import mask_path
from sslkit.data.synthetic import render_scenes


def centre_saliency(images: torch.Tensor) -> torch.Tensor:
    """A stand-in saliency model for tests: bright in the middle half of the image."""
    saliency = torch.zeros(images.shape[0], 1, *images.shape[-2:])
    h, w = images.shape[-2:]
    saliency[:, :, h // 4:3 * h // 4, w // 4:3 * w // 4] = 1.0
    return saliency


def scene_folder(root, n=12, size=48):
    scenes = render_scenes(0, "val", torch.arange(n), image_size=size, background_contrast=0.15, saturation=0.3,
                           rotation_range=30, object_scale=(0.5, 0.8))
    for i in range(n):
        folder = root / f"class{int(scenes['label'][i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scenes["image"][i].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return scenes


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_border_contrast_finds_synthetic_objects():
    scenes = render_scenes(0, "val", torch.arange(32), image_size=64, background_contrast=0.15, saturation=0.3,
                           rotation_range=30, object_scale=(0.5, 0.8))
    masks = SaliencyMasker(BorderContrastSaliency(), threshold=0.5, input_size=None)(scenes["image"])
    scores = [iou(masks[i], scenes["mask"][i]) for i in range(32)]
    assert np.median(scores) > 0.8


def test_masker_thresholds_the_min_max_normalised_map_at_the_image_size():
    def ramp(images):
        return torch.linspace(0, 10, images.shape[-1]).expand(images.shape[0], 1, *images.shape[-2:])

    masks = SaliencyMasker(ramp, threshold=0.5, input_size=16)(torch.zeros(2, 3, 20, 40, dtype=torch.uint8))
    assert masks.shape == (2, 1, 20, 40) and masks.dtype == torch.bool
    assert not masks[..., :18].any() and masks[..., 22:].all()  # the right half, after resizing back


def test_write_masks_mirrors_the_tree_and_resumes(tmp_path):
    scenes = scene_folder(tmp_path / "images")
    masker = SaliencyMasker(load_saliency_model("border_contrast"), input_size=None)
    report = write_masks(tmp_path / "images", tmp_path / "masks", masker, batch_size=5, progress=False)
    assert report.written == 12 and report.skipped == 0
    files = sorted((tmp_path / "images").rglob("*.png"))
    for path in files:
        mask = np.asarray(Image.open(mask_path(path, tmp_path / "images", tmp_path / "masks")))
        assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255}
        truth = scenes["mask"][int(path.stem), 0].numpy()
        assert iou(torch.from_numpy(mask > 127), torch.from_numpy(truth)) > 0.6
    victim = mask_path(files[3], tmp_path / "images", tmp_path / "masks")
    victim.unlink()
    kept = mask_path(files[0], tmp_path / "images", tmp_path / "masks")
    before = kept.stat().st_mtime_ns
    report = write_masks(tmp_path / "images", tmp_path / "masks", masker, progress=False)
    assert report.written == 1 and report.skipped == 11 and victim.exists()
    assert kept.stat().st_mtime_ns == before
    assert not list((tmp_path / "masks").rglob("*.partial"))


def test_pluggable_model_by_import_path_and_unreadable_images(tmp_path):
    scene_folder(tmp_path / "images", n=4)
    folder = sorted(p for p in (tmp_path / "images").iterdir())[0]
    (folder / "broken.jpg").write_bytes(b"not an image")
    masker = SaliencyMasker(load_saliency_model("test_masks:centre_saliency"), input_size=None)
    with pytest.raises(RuntimeError, match=r"cannot decode image file '.*broken.jpg'"):
        write_masks(tmp_path / "images", tmp_path / "masks", masker, progress=False)
    report = write_masks(tmp_path / "images", tmp_path / "masks", masker, skip_unreadable=True, progress=False)
    assert report.written + report.skipped == 4 and len(report.failed) == 1
    assert "unreadable" in report.summary()
    mask = np.asarray(Image.open(next((tmp_path / "masks").rglob("*.png"))))
    assert mask[24, 24] == 255 and mask[0, 0] == 0


def test_unknown_and_unavailable_models_are_clear_errors():
    with pytest.raises(ValueError, match="unknown saliency model 'nope'"):
        load_saliency_model("nope")
    with pytest.raises(ValueError, match="cannot import saliency model"):
        load_saliency_model("no_such_module:thing")
    try:
        import rembg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"sslkit\[masks\]"):
            load_saliency_model("u2net")
