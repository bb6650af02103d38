import json

import torch

from helpers import tiny_data, tiny_moco, tiny_trainer
from sslkit.eval.geometry import GeometryMonitor
from sslkit.eval.spectrum import eigenspectrum


def test_geometry_monitor_logs_and_plots_during_pretraining(tmp_path):
    monitor = GeometryMonitor(every_n_epochs=1, num_samples=32, bank_size=64, knn_k=5)
    trainer = tiny_trainer(tmp_path, max_epochs=2, max_steps=-1, callbacks=[monitor])
    model = tiny_moco()
    data = tiny_data()
    trainer.fit(model, data)
    metrics = trainer.callback_metrics
    for key in ("val/alpha", "val/effective_rank", "val/knn_top1_subset"):
        assert torch.isfinite(metrics[key])
    assert [h["epoch"] for h in monitor.history] == [1, 2]
    assert all(h["val/knn_top1"] is not None for h in monitor.history)  # the method's own monitor, same epoch
    history = json.loads((tmp_path / "geometry.json").read_text())
    assert (tmp_path / "geometry.png").stat().st_size > 0 and len(history) == 2
    # the logged alpha is the eigenspectrum of the same subset, recomputed independently
    data.setup("fit")
    subset = torch.stack([data.val_set[i]["image"] for i in range(32)])
    model.eval()
    with torch.no_grad():
        features = model.backbone(model.augment.evaluate({"image": subset}))
    assert abs(eigenspectrum(features).alpha - history[-1]["val/alpha"]) < 1e-4
