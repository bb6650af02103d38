"""``sslkit report`` on two demo checkpoints: every number of the card, in range, written to
report.json and report.md with its figures; its probe and alpha are those of ``sslkit probe``
and ``sslkit spectrum`` run alone on the same checkpoint."""
import json
import os

import pytest

from conftest import REPO
from helpers import invoke

DEMO = os.path.join(REPO, "configs", "demo.yaml")
PROBE = os.path.join(REPO, "configs", "linear_probe.yaml")
TINY_FIT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false", "--data.init_args.num_train=128", "--data.init_args.num_val=64",
            "--data.init_args.batch_size=32"]
SMALL = ["--data.init_args.num_train=256", "--data.init_args.num_val=160", "--data.init_args.batch_size=64"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from _pytest.monkeypatch import MonkeyPatch

    from sslkit.cli import main

    root = tmp_path_factory.mktemp("report")
    with MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        main(["fit", "-c", DEMO, *TINY_FIT, "--model.init_args.queue_size=256"])
        main(["fit", "-c", DEMO, "-c", os.path.join(REPO, "configs", "demo_byol.yaml"), *TINY_FIT])
    paths = sorted(str(p) for p in (root / "runs").glob("*/version_*/checkpoints/last.ckpt"))
    assert len(paths) == 2
    return root, paths


def test_report_puts_every_instrument_side_by_side(checkpoints, capfd, monkeypatch):
    root, paths = checkpoints
    code, out, err = invoke(["report", "-c", PROBE, "--ckpt_path", *paths, "--out", root / "card", *SMALL,
                             "--cache_dir", root / "cache", "--l2_grid=[0.001,0.1]"], root, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    record = json.loads((root / "card" / "report.json").read_text())
    cards = record["checkpoints"]
    assert sorted(c["name"] for c in cards) == ["demo", "demo+demo_byol"]
    for card in cards:
        for key in ("probe_top1", "probe_top5", "knn_top1", "online_top1"):
            assert 0.0 <= card[key] <= 1.0, key
        assert card["probe_top1"] <= card["probe_top5"]
        assert card["alpha"] > 0 and 1.0 <= card["effective_rank"] <= card["dim"]
        assert 1.0 <= card["participation_ratio"] <= card["dim"]
        variants = card["backgrounds_top1"]  # SyntheticScenes has masks
        assert set(variants) == {"original", "only_fg", "mixed_same", "mixed_rand", "bg_gap"}
        assert card["bg_gap"] == pytest.approx(variants["mixed_same"] - variants["mixed_rand"])
        assert variants["original"] == pytest.approx(card["probe_top1"])  # the clean val features, encoded once
        assert {"val/knn_top1", "val/online_top1"} <= set(card["curves"])
    text = (root / "card" / "report.md").read_text()
    assert "| demo |" in text and "| demo+demo_byol |" in text
    for figure in ("spectra.png", "backgrounds.png", "curves.png"):
        assert (root / "card" / figure).stat().st_size > 0 and f"]({figure})" in text


def test_report_agrees_with_probe_and_spectrum_run_alone(checkpoints, capfd, monkeypatch):
    root, paths = checkpoints
    code, _, err = invoke(["report", "-c", PROBE, "--ckpt_path", paths[0], "--out", root / "one", *SMALL,
                           "--cache_dir", "null", "--l2_grid=[0.001,0.1]"], root, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    card = json.loads((root / "one" / "report.json").read_text())["checkpoints"][0]
    code, _, err = invoke(["probe", "-c", PROBE, "--ckpt_path", paths[0], "--out", root / "probe.json", *SMALL,
                           "--cache_dir", "null", "--l2_grid=[0.001,0.1]"], root, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    probe = json.loads((root / "probe.json").read_text())
    assert card["probe_top1"] == probe["top1"] and card["probe_top5"] == probe["top5"]
    assert card["knn_top1"] == probe["knn_top1"]
    code, _, err = invoke(["spectrum", "-c", PROBE, "--ckpt_path", paths[0], "--out", root / "spectrum", *SMALL],
                          root, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    spectrum = json.loads((root / "spectrum" / "spectrum.json").read_text())["backbone"]
    assert card["alpha"] == pytest.approx(spectrum["alpha"], rel=1e-9)
    assert card["effective_rank"] == pytest.approx(spectrum["effective_rank"], rel=1e-9)
    assert card["participation_ratio"] == pytest.approx(spectrum["participation_ratio"], rel=1e-9)


def test_report_refuses_names_that_do_not_match(checkpoints, capfd, monkeypatch):
    root, paths = checkpoints
    code, _, err = invoke(["report", "-c", PROBE, "--ckpt_path", *paths, "--names", "one"], root, capfd, monkeypatch)
    assert code == 2 and "--names gives 1 names for 2 checkpoints" in err
