"""Image files on disk: which there are, and where each one's mask lives.

``list_image_folder`` lists a class-per-folder tree once and keeps the list in a cache file,
reused while no directory of the tree has changed, so ImageNet's 1.28 M files are not walked
again at every start. A directory has changed when its modification time *or* its status
change time (ctime) moved: adding, removing or renaming an entry moves both, and a tool
that restores the modification time afterwards (``rsync -a``, ``tar``, ``cp -p``) cannot
restore the ctime. Under DDP one process lists the tree and the others receive the list.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info
from torchvision.datasets.folder import IMG_EXTENSIONS

CACHE_VERSION = 2


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def mask_path(image: str | Path, images_root: str | Path, masks_root: str | Path) -> Path:
    """The mask file of ``image``: the same relative path under ``masks_root``, as PNG."""
    return Path(masks_root) / Path(image).relative_to(images_root).with_suffix(".png")


def _stamp(directory: str | Path) -> list[int]:
    """What changes when an entry of ``directory`` is added, removed or renamed."""
    info = os.stat(directory)
    return [info.st_mtime_ns, info.st_ctime_ns]


def _walk(root: Path) -> tuple[list[str], dict[str, list[int]]]:
    """Every image under ``root`` (relative paths, sorted) and the stamp of every directory
    visited."""
    files, stamps = [], {}
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs.sort()
        stamps[os.path.relpath(directory, root)] = _stamp(directory)
        files.extend(os.path.relpath(os.path.join(directory, n), root) for n in sorted(names) if is_image(n))
    return sorted(files), stamps


def image_files(root: str | Path) -> list[Path]:
    """Every image under ``root`` (recursively), in sorted order."""
    root = Path(root)
    return [root / f for f in _walk(root)[0]]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sslkit" / "file_lists"


def _cache_valid(record: dict, root: Path) -> bool:
    try:
        return all(_stamp(root / d) == list(t) for d, t in record["stamps"].items())
    except OSError:
        return False


def cache_file(root: str | Path, cache_dir: str | Path | None = "auto") -> Path | None:
    """Where the file list of ``root`` is cached (``None`` when ``cache_dir`` is ``None``):
    deleting it makes the next run list the tree again."""
    if cache_dir is None:
        return None
    directory = default_cache_dir() if cache_dir == "auto" else Path(cache_dir)
    return directory / f"{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:20]}.json"


def list_image_folder(root: str | Path, cache_dir: str | Path | None = "auto") -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, samples)`` of ``root/<class>/**/<image>``, as torchvision's ``ImageFolder``
    orders them (classes sorted, files sorted within each). ``cache_dir``: where the list is
    kept (``auto``: ``~/.cache/sslkit/file_lists``; ``None``: never cached). Under DDP rank 0
    lists (or reads the cache) and every other rank receives its list."""
    from sslkit.nn import distributed

    return distributed.from_rank_zero(lambda: _list_image_folder(Path(root).resolve(), cache_dir))


def _list_image_folder(root: Path, cache_dir: str | Path | None) -> tuple[list[str], list[tuple[str, int]]]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    cache = cache_file(root, cache_dir)
    if cache is not None:
        if cache.is_file():
            try:
                record = json.loads(cache.read_text())
            except (OSError, ValueError):
                record = {}
            if record.get("version") == CACHE_VERSION and record.get("root") == str(root) and _cache_valid(record, root):
                rank_zero_info(f"sslkit: file list of {root} from the cache {cache} "
                               f"({len(record['samples']):,} images, {len(record['classes'])} classes)")
                return record["classes"], [(str(root / p), c) for p, c in record["samples"]]
    start = time.perf_counter()
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"image folder '{root}' has no class folders (expected {root}/<class>/<image>)")
    samples, stamps = [], {".": _stamp(root)}
    for label, name in enumerate(classes):
        files, walked = _walk(root / name)
        samples.extend((os.path.join(name, f), label) for f in files)
        stamps.update({os.path.normpath(os.path.join(name, d)): t for d, t in walked.items()})
    if not samples:
        raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) under '{root}'")
    message = f"sslkit: listed {len(samples):,} images in {len(classes)} classes under {root} in " \
              f"{time.perf_counter() - start:.1f} s"
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            record = json.dumps({"version": CACHE_VERSION, "root": str(root), "classes": classes,
                                 "stamps": stamps, "samples": samples})
            with tempfile.NamedTemporaryFile("w", dir=cache.parent, prefix=cache.name, suffix=".partial",
                                             delete=False) as partial:  # a name of its own per writer
                partial.write(record)
            os.replace(partial.name, cache)
            message += f"; cached at {cache}"
        except OSError as err:
            message += f" (not cached: {err})"
    rank_zero_info(message)
    return classes, [(str(root / p), c) for p, c in samples]
