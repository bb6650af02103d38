"""``sslkit report`` on two demo checkpoints: every number of the card, in range, written to
report.json and report.md with its figures; its probe and alpha are those of ``sslkit probe``
and ``sslkit spectrum`` run alone on the same checkpoint; each figure from elsewhere (the run's
online classifier, a landscape.json) is joined to the very checkpoint it was measured on, and
labelled with its source."""
import csv
import json
import os
import shutil
from types import SimpleNamespace

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
                             "--cache_dir", root / "cache", "--l2_grid=[0.001,0.1]", "--val_fraction=0.25"],
                            root, capfd, monkeypatch)
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
        # the online figure is the one logged at the checkpoint's own step, and says its source
        assert card["online_source"] == "bank" and card["online_top1_at"]["epoch"] == card["checkpoint_epoch"] == 1
        assert card["online_top1_at"]["step"] == card["checkpoint_step"] - 1
        assert card["held_out"] == 64 and card["val_fraction"] == 0.25  # a quarter of 256
        assert (card["knn_k"], card["knn_temperature"]) == (20, 0.07)
        assert card["run_knn"] == {"k": 20, "temperature": 0.1}  # the demo's own kNN monitor
    text = (root / "card" / "report.md").read_text()
    assert "| demo |" in text and "| demo+demo_byol |" in text
    assert "online top-1 (bank) (%)" in text and "kNN top-1 (k=20, T=0.07) (%)" in text
    assert "on 64 of them held out (25%)" in text and "20% held out" not in text
    assert "agreement with the linear probe holds by construction" in text and "k=20, T=0.1" in text
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


def run_copy(root, path, tmp_path, epoch=None, step=None):
    """The run of ``path`` copied to ``tmp_path`` (metrics.csv and the checkpoint), the copy's
    checkpoint rewritten to say it stands at ``epoch`` and ``step`` where given."""
    import torch

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.join(os.path.dirname(os.path.dirname(path)), "metrics.csv"), run / "metrics.csv")
    target = run / "checkpoints" / (f"epoch={epoch}.ckpt" if epoch is not None else "last.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if epoch is not None:
        checkpoint["epoch"], checkpoint["global_step"] = epoch, step
    torch.save(checkpoint, target)
    return str(target)


def online_rows(path):
    with open(os.path.join(os.path.dirname(os.path.dirname(path)), "metrics.csv")) as f:
        return [(int(float(r["epoch"])), int(float(r["step"])), float(r["val/online_top1"])) for r in csv.DictReader(f)
                if r.get("val/online_top1")]


def test_online_top1_is_the_one_logged_at_the_checkpoints_own_step(checkpoints, tmp_path):
    from sslkit.commands.report import checkpoint_facts, run_logs

    root, paths = checkpoints
    rows = online_rows(paths[0])
    assert [r[0] for r in rows] == [0, 1] and rows[0][2] != rows[1][2]
    last = run_logs(paths[0], checkpoint_facts(paths[0]))
    assert last["online_top1"] == rows[1][2]
    earlier = run_copy(root, paths[0], tmp_path, epoch=0, step=rows[0][1] + 1)  # an epoch-0 checkpoint of the run
    logs = run_logs(earlier, checkpoint_facts(earlier))
    assert logs["online_top1"] == rows[0][2] and logs["online_top1_at"] == {"epoch": 0, "step": rows[0][1]}
    mid = run_copy(root, paths[0], tmp_path, epoch=0, step=rows[0][1] - 1)  # mid-epoch: nothing logged there
    logs = run_logs(mid, checkpoint_facts(mid))
    assert "online_top1" not in logs and "no val/online_top1 at this checkpoint's epoch 0" in logs["notes"][0]
    assert logs["curves"]["val/online_top1"]  # the curves stay


def test_a_landscape_record_joins_only_the_checkpoint_it_was_measured_on(checkpoints, tmp_path):
    from sslkit.checkpoints import file_digest
    from sslkit.commands.report import joined, markdown, table

    root, paths = checkpoints
    ckpt = run_copy(root, paths[0], tmp_path)
    beside = tmp_path / "run" / "checkpoints" / "landscape.json"
    record = {"top_eigenvalues": [3.0, 2.0], "trace": 10.0, "trace_stderr": 1.0, "loss": "probe", "batches": 1}
    other = {**record, "ckpt_path": paths[1], "ckpt_sha256": file_digest(paths[1])}
    beside.write_text(json.dumps(other))  # another checkpoint's landscape in this folder
    card = joined({"name": "demo"}, ckpt, file_digest(ckpt))
    assert "hessian_top" not in card and "measured on another checkpoint" in card["notes"][0]
    beside.write_text(json.dumps({**record, "ckpt_path": paths[1]}))  # no digest, another path
    card = joined({"name": "demo"}, ckpt, file_digest(ckpt))
    assert "hessian_top" not in card and "not on this checkpoint" in card["notes"][0]
    beside.write_text(json.dumps({**record, "ckpt_path": ckpt, "ckpt_sha256": file_digest(ckpt)}))
    card = joined({"name": "demo"}, ckpt, file_digest(ckpt))
    assert card["hessian_top"] == 3.0 and card["hessian_loss"] == "probe" and "notes" not in card
    assert card["landscape"]["matched_by"] == "sha256"
    beside.write_text(json.dumps({**record, "ckpt_path": ckpt}))  # written before the digest was recorded
    assert joined({"name": "demo"}, ckpt, file_digest(ckpt))["landscape"]["matched_by"] == "path"
    os.utime(ckpt, (beside.stat().st_mtime + 10,) * 2)  # ... but the checkpoint was rewritten since
    card = joined({"name": "demo"}, ckpt, file_digest(ckpt))
    assert "hessian_top" not in card and "written after it" in card["notes"][0]
    # the table labels the loss and the online source; mixed sources are labelled per cell
    cards = [{"name": "a", "hessian_top": 3.0, "hessian_loss": "ssl", "online_top1": 0.5, "online_source": "bank"},
             {"name": "b", "hessian_top": 4.0, "hessian_loss": "probe", "online_top1": 0.6, "online_source": "global"}]
    lines = table(cards)
    assert "| checkpoint | online top-1 (%) | Hessian top |" == lines[0]
    assert lines[2] == "| a | 50.00 (bank) | 3 (ssl loss) |" and lines[3] == "| b | 60.00 (global) | 4 (probe loss) |"
    assert table(cards[:1])[0] == "| checkpoint | online top-1 (bank) (%) | Hessian top (ssl loss) |"
    first = {**cards[1], "ckpt_path": ckpt, "n_train": 100, "held_out": 10, "val_fraction": 0.1, "knn_k": 5,
             "knn_temperature": 0.1, "n_test": 10, "dim": 8, "alpha_fit_range": [1, 5], "notes": ["why"]}
    text = markdown([first], [], "Data")
    assert "an estimate independent of the probe" in text and "by construction" not in text
    assert "on 10 of them held out (10%)" in text and "kNN: weighted (k=5, T=0.1)" in text and "  - why" in text


def test_the_feature_cache_keys_on_how_the_checkpoint_was_read():
    from helpers import tiny_data
    from sslkit.commands.common import feature_source

    data = tiny_data()
    data.setup("validate")
    base = dict(ckpt_path="test_resnet", branch=None, arch=None, ckpt_format="auto", small_stem_padding=None,
                crop_size=32, resize=None, mean=None, std=None)
    backbone = SimpleNamespace(features="cls", last_n=None)
    keys = [feature_source(SimpleNamespace(**{**base, **change}), backbone, data, "cpu", None).key
            for change in ({}, {"arch": "resnet18"}, {"ckpt_format": "torchvision"}, {"small_stem_padding": 2})]
    assert all(a != b for i, a in enumerate(keys) for b in keys[i + 1:])
    assert keys[0]["features"] == "cls" and keys[0]["small_stem_padding"] is None


def test_finetune_runs_join_the_checkpoint_they_fine_tuned(checkpoints, capfd, monkeypatch):
    """``--finetune``: an ``sslkit finetune`` run of the first checkpoint joins that checkpoint's
    card with the top-1 its metrics.csv logged last; a ``random:`` run is a baseline row; a run
    of a checkpoint not in the report (another SHA-256) is left out, and said."""
    root, paths = checkpoints
    configs = os.path.join(REPO, "configs")
    tiny = ["--data.init_args.num_train=200", "--data.init_args.num_val=40", "--data.init_args.num_classes=4",
            "--data.init_args.batch_size=8", "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
            "--trainer.precision=32", "--trainer.enable_progress_bar=false", "--trainer.sync_batchnorm=false"]
    base = ["finetune", "-c", os.path.join(configs, "finetune_semisup_simclr.yaml"), "-c",
            os.path.join(configs, "demo_finetune.yaml"), "--labels", "10%", *tiny]
    for name, source in (("ft_a", paths[0]), ("ft_random", "random:test_resnet")):
        code, _, err = invoke([*base, "--ckpt_path", source, f"--trainer.logger.init_args.save_dir={root / 'ft'}",
                               f"--trainer.logger.init_args.name={name}"], root, capfd, monkeypatch)
        assert code == 0, err[-3000:]
    run = root / "ft" / "ft_a" / "version_0"
    with open(run / "metrics.csv") as f:
        logged = [float(r["val/top1"]) for r in csv.DictReader(f) if r.get("val/top1")]
    other = root / "ft" / "ft_other" / "version_0"
    other.mkdir(parents=True)
    record = json.loads((run / "finetune.json").read_text())
    other_record = {**record, "source": {"ckpt_path": "/elsewhere/x.ckpt", "sha256": "0" * 64}}
    (other / "finetune.json").write_text(json.dumps(other_record))
    code, _, err = invoke(["report", "-c", PROBE, "--ckpt_path", *paths, "--out", root / "ftcard", *SMALL,
                           "--cache_dir", root / "cache", "--l2_grid=[0.001]", "--finetune", root / "ft"],
                          root, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    report = json.loads((root / "ftcard" / "report.json").read_text())
    first, second = report["checkpoints"]
    assert [row["run"] for row in first["finetune"]] == [str(run)] and "finetune" not in second
    row = first["finetune"][0]
    assert row["val_top1"] == pytest.approx(logged[-1]) and (row["train"], row["labels"]) == ("all", "10%")
    assert [b["source"] for b in report["finetune_baselines"]] == ["random:test_resnet"]
    assert any("ft_other" in note for note in first["notes"])
    text = (root / "ftcard" / "report.md").read_text()
    assert "## Fine-tuning" in text and f"| {first['name']} | all | 10% | 1 | {100 * logged[-1]:.1f} |" in text
    assert "| random:test_resnet | all | 10% | 1 |" in text
