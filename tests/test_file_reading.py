"""Reading an image folder the way runs meet it: files that vanish or cannot be opened after
the list was made, tools that restore directory times, several ranks on a cold cache,
``reduce_to`` on every decoder, JPEG bytes through the transfer, and the cores shared with
the workers."""
import io
import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from ddp import run_distributed
from sslkit.data import ImageDecodeError, ImageFolderDataset, decode_batch, list_image_folder, share_cores, to_device
from sslkit.data.base import collate_dropping_skipped
from sslkit.data.decode import reduced_size
from sslkit.data.files import cache_file


def photo(width, height, seed):
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(7 * x * g.uniform(0.5, 2) + g.uniform(0, 6)) + np.cos(5 * y * g.uniform(0.5, 2)) for _ in range(3)]
    return (np.stack(channels, -1) * 60 + 128).clip(0, 255).astype(np.uint8)


def make_tree(root, count=4):
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(photo(64 + 8 * i, 48 + 4 * i, 10 * c + i)).save(root / cls / f"{i}.jpg", quality=90)


@pytest.mark.parametrize("decoder", ["pil", "torchvision", "device"])
@pytest.mark.parametrize("how", ["deleted", "not_a_file"])
def test_a_listed_file_that_cannot_be_opened_is_named_or_skipped(tmp_path, decoder, how):
    make_tree(tmp_path / "img")
    cache = tmp_path / "cache"
    strict = ImageFolderDataset(tmp_path / "img", None, decoder=decoder, index_cache=str(cache))
    lenient = ImageFolderDataset(tmp_path / "img", None, decoder=decoder, index_cache=str(cache), bad_images="skip")
    gone = tmp_path / "img" / "b" / "1.jpg"
    gone.unlink()
    if how == "not_a_file":
        gone.mkdir()  # IsADirectoryError: an OSError other than 'not found'
    with pytest.raises(ImageDecodeError, match=f"'{gone}' is in the file list but") as info:
        strict[5]
    assert str(cache_file(tmp_path / "img", str(cache))) in str(info.value)  # how to refresh the list
    assert "bad_images: skip" in str(info.value)
    batch = collate_dropping_skipped([lenient[i] for i in range(4, 8)])
    assert len(batch["image"]) == 3 and batch["label"].tolist() == [1, 1, 1]
    assert str(gone) in batch["skipped"][0]


def test_a_deletion_is_seen_even_when_the_folder_time_is_restored(tmp_path):
    """rsync -a, tar and cp -p put a directory's modification time back; its ctime moves anyway."""
    make_tree(tmp_path / "img")
    cache = tmp_path / "cache"
    _, before = list_image_folder(tmp_path / "img", cache)
    folder = tmp_path / "img" / "a"
    times = os.stat(folder)
    (folder / "2.jpg").unlink()
    os.utime(folder, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert os.stat(folder).st_mtime_ns == times.st_mtime_ns
    _, after = list_image_folder(tmp_path / "img", cache)
    assert len(after) == len(before) - 1 and str(folder / "2.jpg") not in [p for p, _ in after]


def _list_on_rank(rank, world_size, root, cache):
    from sslkit.data import files

    walks = []
    original = files._walk
    files._walk = lambda path: walks.append(path) or original(path)
    classes, samples = list_image_folder(root, cache)
    return {"walks": len(walks), "samples": samples, "classes": classes}


def test_under_ddp_one_rank_lists_the_tree_and_the_others_receive_it(tmp_path):
    make_tree(tmp_path / "img")
    results = run_distributed(_list_on_rank, 2, str(tmp_path / "img"), str(tmp_path / "cache"))
    assert results[0]["walks"] == 2 and results[1]["walks"] == 0  # rank 0 walked both classes, rank 1 none
    assert results[0]["samples"] == results[1]["samples"] and len(results[1]["samples"]) == 8
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache_file(tmp_path / "img", tmp_path / "cache").name]


def _missing_root(rank, world_size, root):
    try:
        list_image_folder(root, None)
    except FileNotFoundError as err:
        return str(err)
    return None


def test_under_ddp_an_error_on_rank_zero_reaches_every_rank(tmp_path):
    messages = run_distributed(_missing_root, 2, str(tmp_path / "nowhere"))
    assert all(m is not None and "nowhere' does not exist" in m for m in messages)


def jpeg(array, **kwargs):
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=92, **kwargs)
    return out.getvalue()


def test_reduce_to_shrinks_every_image_alike_on_every_decoder(tmp_path):
    """A baseline JPEG, a CMYK JPEG and a PNG in one folder: with reduce_to each comes out at
    the size PIL's draft gives, whether decoded by PIL, libjpeg-turbo or on the device."""
    (tmp_path / "img" / "a").mkdir(parents=True)
    image = photo(300, 200, 1)
    (tmp_path / "img" / "a" / "0.jpg").write_bytes(jpeg(image))
    Image.fromarray(image).convert("CMYK").save(tmp_path / "img" / "a" / "1.jpg", quality=92)
    Image.fromarray(image).save(tmp_path / "img" / "a" / "2.png")
    with Image.open(tmp_path / "img" / "a" / "0.jpg") as img:  # PIL's own DCT scaling, the reference
        img.draft("RGB", (300 // 4, 200 // 4))
        reference = np.array(img.convert("RGB"))
    assert reference.shape[:2] == reduced_size(200, 300, 50) == (50, 75)
    decoded = {}
    for decoder in ("pil", "torchvision", "device"):
        dataset = ImageFolderDataset(tmp_path / "img", None, decoder=decoder, reduce_to=50, index_cache=None)
        batch = decode_batch(collate_dropping_skipped([dataset[i] for i in range(3)]), device="cpu")
        decoded[decoder] = batch["image"]
    for decoder, images in decoded.items():
        assert tuple(images[0].shape) == (3, 50, 75), decoder  # the baseline JPEG, reduced
        assert tuple(images[1].shape) == (3, 50, 75), decoder  # CMYK (through PIL), reduced
        assert tuple(images[2].shape) == (3, 200, 300), decoder  # PNG: no DCT scaling
        error = (images[0].permute(1, 2, 0).float() - torch.from_numpy(reference).float()).abs().mean()
        assert error < (1e-6 if decoder != "device" else 1.5), (decoder, float(error))  # device: resampled, not DCT-scaled


def test_jpeg_bytes_stay_in_host_memory_through_the_transfer(tmp_path):
    """nvJPEG reads its input from host memory: bytes moved to the GPU would be copied back."""
    from helpers import tiny_moco

    make_tree(tmp_path / "img")
    dataset = ImageFolderDataset(tmp_path / "img", None, decoder="device", index_cache=None)
    batch = collate_dropping_skipped([dataset[i] for i in range(3)])
    for moved in (tiny_moco().transfer_batch_to_device(batch, torch.device("meta"), 0), to_device(batch, "meta")):
        assert all(x.device.type == "cpu" and x.dim() == 1 for x in moved["image"])
        assert moved["label"].device.type == "meta" and moved["size"].device.type == "meta"


def test_the_main_process_leaves_the_data_workers_their_cores(monkeypatch, caplog):
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    caplog.set_level("INFO")
    try:
        torch.set_num_threads(8)
        assert share_cores(3, "cpu") == 8 and torch.get_num_threads() == 5
        assert "leaving 3 of 8 cores to the 3 data-loading workers" in caplog.text
        assert share_cores(0, "cpu") is None and share_cores(3, "meta") is None  # no workers, no CPU: untouched
        monkeypatch.setenv("OMP_NUM_THREADS", "8")
        torch.set_num_threads(8)
        assert share_cores(3, "cpu") is None and torch.get_num_threads() == 8  # the user's own setting wins
    finally:
        torch.set_num_threads(threads)


def test_training_on_the_cpu_gives_the_workers_their_cores_for_the_run(tmp_path, monkeypatch):
    from helpers import tiny_data, tiny_moco, tiny_trainer

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    threads = torch.get_num_threads()
    seen = []

    class Threads(pl.Callback):
        def on_train_batch_start(self, *args):
            seen.append(torch.get_num_threads())

    try:
        torch.set_num_threads(4)
        trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0, callbacks=[Threads()])
        trainer.fit(tiny_moco(), tiny_data(num_workers=1))
        assert seen == [3, 3]  # during the run: 4 cores, 1 worker
        assert torch.get_num_threads() == 4  # and the process's own setting afterwards
    finally:
        torch.set_num_threads(threads)
