"""The ``sslkit`` command: LightningCLI's fit/validate/test for any method and DataModule,
plus the tools around training.

    sslkit fit -c configs/demo.yaml
    sslkit validate -c configs/demo.yaml          # kNN accuracy at random initialisation
    sslkit fit -c configs/demo.yaml --trainer.accelerator=gpu
    sslkit preview -c configs/demo_bg.yaml --out views.png
    sslkit masks --images DIR --out DIR --model u2net
    sslkit backgrounds -c configs/demo_bg.yaml --ckpt_path runs/.../last.ckpt
    sslkit probe -c configs/linear_probe.yaml --source runs/.../last.ckpt
    sslkit spectrum -c configs/linear_probe.yaml --source runs/.../last.ckpt
    sslkit export --ckpt runs/.../last.ckpt --out backbone.pth --format torchvision
"""
from __future__ import annotations

import importlib
import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_info

import sslkit.data  # noqa: F401  (registers the DataModules for short class names)
from sslkit.reliability import AtomicCheckpointIO, PreemptionCheckpoint, find_last_checkpoint
import sslkit.methods  # noqa: F401


class FitSummary(pl.Callback):
    """Prints training throughput, the last kNN accuracy and where logs and checkpoints went.

    Throughput counts whole training epochs (loading, transfer, on-device augmentation,
    optimiser steps) minus the validation that runs inside them.
    """

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self.train_images = 0
        self._epoch_start: float | None = None
        self._val_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._epoch_start is not None:
            self.train_seconds -= time.perf_counter() - self._val_start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_images += int(batch["image"].shape[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start
        self._epoch_start = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        knn = trainer.callback_metrics.get("val/knn_top1")
        lines = [f"sslkit: finished {trainer.global_step} steps, {trainer.current_epoch} epochs"]
        if self.train_seconds > 0:
            lines.append(
                f"sslkit: training {self.train_images / self.train_seconds:,.0f} images/s per device "
                f"({self.train_seconds:.1f} s in training steps)"
            )
        if knn is not None:
            lines.append(f"sslkit: val/knn_top1 = {float(knn):.4f}")
        if trainer.log_dir:
            lines.append(f"sslkit: logs in {trainer.log_dir}")
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.last_model_path:
            lines.append(f"sslkit: last checkpoint {trainer.checkpoint_callback.last_model_path}")
        rank_zero_info("\n".join(lines))


class SSLKitCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True) -> None:
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"callbacks": [FitSummary(), PreemptionCheckpoint()],
                              "plugins": [AtomicCheckpointIO()]},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )


    def before_fit(self) -> None:
        if self.config_init["fit"].get("ckpt_path") == "last":
            last = find_last_checkpoint(self.trainer)
            if last is None:
                raise FileNotFoundError(
                    f"--ckpt_path last: no last.ckpt under {self.trainer.logger.save_dir if self.trainer.logger else ''} "
                    f"or {self.trainer.default_root_dir}; pass the checkpoint's path"
                )
            rank_zero_info(f"sslkit: resuming from {last}")
            self.config_init["fit"]["ckpt_path"] = str(last)
        check = getattr(self.model, "check_data", None)
        if check is not None:
            check(self.datamodule, self.trainer.world_size)


TOOLS = {
    "preview": "sslkit.commands.preview",
    "masks": "sslkit.commands.masks",
    "backgrounds": "sslkit.commands.backgrounds",
    "probe": "sslkit.commands.probe",
    "spectrum": "sslkit.commands.spectrum",
    "export": "sslkit.commands.export",
}


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in TOOLS:
        importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        return
    if argv and argv[0] in ("-h", "--help"):
        print(f"sslkit tools (each has --help): {', '.join(TOOLS)}\n")
    SSLKitCLI(args=args)


if __name__ == "__main__":
    main()
