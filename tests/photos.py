"""A small ImageNet-layout folder of real photographs, at their own sizes and in the kinds of
file a real folder holds: baseline and progressive JPEG, PNG, greyscale, CMYK, EXIF-rotated,
one corrupt file, and one file that vanishes after its folder's list was cached.

The photographs are scikit-image's sample images (``skimage/data``, in the dev extra) and
matplotlib's portrait of Grace Hopper; nothing is downloaded."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from PIL import Image


def sample_photos() -> dict[str, Path]:
    skimage = Path(importlib.util.find_spec("skimage").origin).parent / "data"
    matplotlib = Path(importlib.util.find_spec("matplotlib").origin).parent / "mpl-data" / "sample_data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
             "motorcycle_left.png", "ihc.png", "camera.png", "coins.png", "moon.png"]
    photos = {Path(n).stem: skimage / n for n in names}
    photos["grace_hopper"] = matplotlib / "grace_hopper.jpg"
    missing = [str(p) for p in photos.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"sample photos not found: {missing} (pip install -e '.[dev]' brings scikit-image)")
    return photos


KINDS = ("jpeg", "progressive", "png", "grey", "cmyk", "exif_rotated")

# (photo, crop box as fractions (left, top, right, bottom), longer side in pixels, kind)
LAYOUT = {
    "train": {
        "people": [("astronaut", (0, 0, 1, 1), 320, "jpeg"), ("grace_hopper", (0, 0, 1, 1), 300, "progressive"),
                   ("camera", (0, 0, 1, 1), 288, "grey"), ("astronaut", (0.2, 0, 1, 0.7), 336, "png"),
                   ("grace_hopper", (0.1, 0, 0.9, 0.8), 260, "cmyk"), ("camera", (0, 0.1, 0.8, 1), 300, "exif_rotated"),
                   ("astronaut", (0, 0.3, 0.7, 1), 280, "progressive"), ("grace_hopper", (0, 0.2, 1, 1), 310, "corrupt")],
        "things": [("coffee", (0, 0, 1, 1), 330, "jpeg"), ("rocket", (0, 0, 1, 1), 320, "progressive"),
                   ("coins", (0, 0, 1, 1), 300, "grey"), ("motorcycle_left", (0, 0, 1, 1), 340, "png"),
                   ("hubble_deep_field", (0, 0, 1, 1), 280, "cmyk"), ("coffee", (0.2, 0, 1, 1), 290, "exif_rotated"),
                   ("ihc", (0, 0, 1, 1), 300, "jpeg"), ("rocket", (0.1, 0.1, 0.9, 1), 270, "png")],
    },
    "val": {
        "people": [("astronaut", (0.1, 0.1, 0.9, 0.9), 300, "jpeg"), ("grace_hopper", (0.05, 0.05, 0.95, 0.95), 280, "png"),
                   ("camera", (0.1, 0, 1, 0.9), 290, "progressive"), ("moon", (0, 0, 1, 1), 260, "grey"),
                   ("astronaut", (0.3, 0.1, 1, 1), 300, "cmyk"), ("grace_hopper", (0, 0, 0.9, 1), 290, "exif_rotated")],
        "things": [("coffee", (0.1, 0.1, 0.9, 1), 300, "progressive"), ("rocket", (0.05, 0, 1, 0.95), 310, "jpeg"),
                   ("motorcycle_left", (0.1, 0, 1, 1), 300, "cmyk"), ("coins", (0.1, 0.1, 1, 1), 260, "png"),
                   ("ihc", (0.2, 0.2, 1, 1), 280, "exif_rotated"), ("hubble_deep_field", (0.2, 0, 1, 0.8), 300, "jpeg")],
    },
}
VANISHING = "val/things/5.jpg"  # deleted after the file list was cached


def _save(image: Image.Image, path: Path, kind: str) -> Path:
    if kind in ("png",):
        path = path.with_suffix(".png")
        image.convert("RGB").save(path)
    elif kind == "grey":
        image.convert("L").save(path, quality=90)
    elif kind == "cmyk":
        image.convert("CMYK").save(path, quality=90)
    elif kind == "progressive":
        image.convert("RGB").save(path, quality=90, progressive=True)
    elif kind == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display": neither PIL nor torchvision's ImageFolder applies it
        image.convert("RGB").save(path, quality=90, exif=exif.tobytes())
    elif kind == "corrupt":
        image.convert("RGB").save(path, quality=90)
        path.write_bytes(path.read_bytes()[:600])  # header intact, image data cut
    else:
        image.convert("RGB").save(path, quality=90)
    return path


def photo_folder(root: Path) -> dict:
    """Write the folder under ``root`` (``root/train/<class>/*``, ``root/val/<class>/*``) and
    return what it holds: ``files`` by kind, ``corrupt``, and ``sizes`` (width, height) of every
    readable file."""
    photos = sample_photos()
    record = {"files": {}, "sizes": {}, "corrupt": []}
    for split, classes in LAYOUT.items():
        for cls, entries in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, (name, box, side, kind) in enumerate(entries):
                with Image.open(photos[name]) as source:
                    source = source.convert("RGB") if source.mode not in ("RGB", "L") else source.copy()
                w, h = source.size
                image = source.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
                scale = side / max(image.size)
                image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.BICUBIC)
                path = _save(image, folder / f"{i}.jpg", kind)
                record["files"].setdefault(kind, []).append(str(path))
                if kind == "corrupt":
                    record["corrupt"].append(str(path))
                else:
                    record["sizes"][str(path)] = image.size
    return record


def vanish_after_caching(root: Path, cache_dir: Path) -> Path:
    """Cache the file lists of both splits, then delete one listed file the way a
    cache cannot see (the cached record's directory stamps rewritten to the new state, as
    on a file system whose directory times do not move): the run meets a listed file that is
    gone, and must name it or skip it."""
    from sslkit.data import list_image_folder
    from sslkit.data.files import _stamp, cache_file

    for split in ("train", "val"):
        list_image_folder(root / split, cache_dir)
    gone = root / VANISHING
    gone.unlink()
    cache = cache_file(root / gone.parts[-3], cache_dir)
    record = json.loads(cache.read_text())
    record["stamps"] = {d: _stamp(root / gone.parts[-3] / d) for d in record["stamps"]}
    cache.write_text(json.dumps(record))
    assert any(str(gone) == os.path.join(record["root"], p) for p, _ in record["samples"])
    return gone
