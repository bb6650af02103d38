"""``sslkit finetune``: a classifier fine-tuned on a pretrained backbone (LightningCLI over
``sslkit.eval.finetune.FineTuner``: fit, validate, test; YAML configs, overlays, every flag).

    sslkit finetune -c configs/finetune_semisup_simclr.yaml --ckpt_path runs/.../last.ckpt --labels 1%
    sslkit finetune -c configs/finetune_semisup_simclr.yaml -c configs/demo_finetune.yaml --ckpt_path CKPT --train batchnorm
    sslkit finetune -c configs/finetune_semisup_simclr.yaml -c configs/demo_finetune.yaml --ckpt_path random:test_resnet
    sslkit finetune -c configs/finetune_semisup_simclr.yaml --ckpt_path CKPT --resume last   # continue a run
    sslkit finetune test -c configs/finetune_semisup_simclr.yaml --ckpt_path CKPT --resume runs/.../last.ckpt

The subcommand (``fit`` by default) may come first. ``--ckpt_path`` names the backbone (any
checkpoint ``load_backbone`` reads, a timm name for hub weights, or ``random:NAME``), as in
``sslkit probe``; with ``--arch``, ``--ckpt_format``, ``--branch``, ``--small_stem_padding``,
``--features``, ``--last_n``, ``--train``, ``--labels``, ``--label_seed``, ``--layer_decay``
and ``--num_classes`` it is short for ``--model.<name>``. ``--resume`` is Lightning's
``--ckpt_path`` (a fine-tuning checkpoint, or ``last``).
"""
from __future__ import annotations

import os
import sys

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_info

import sslkit.data  # noqa: F401  (short class names of the data modules)
from sslkit.eval.finetune import FineTuner, LabelledData

SUBCOMMANDS = ("fit", "validate", "test")
MODEL_FLAGS = ("ckpt_path", "arch", "ckpt_format", "branch", "small_stem_padding", "features", "last_n", "train",
               "labels", "label_seed", "layer_decay", "num_classes")


def translate(argv: list[str]) -> list[str]:
    """The command line as LightningCLI reads it: the subcommand first (``fit`` by default),
    the short flags as ``--model.<name>``, ``--resume`` as Lightning's ``--ckpt_path``."""
    argv = list(argv)
    sub = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "fit"
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and flag[2:] in MODEL_FLAGS:
            arg = f"--model.{flag[2:]}{eq}{value}"
        elif flag == "--resume":
            arg = f"--ckpt_path{eq}{value}"
        out.append(arg)
    return [sub, *out]


class FinetuneCLI(LightningCLI):
    def __init__(self, args: list[str], run: bool = True, instantiate_trainer: bool = True) -> None:
        from sslkit.cli import FitSummary, run_name
        from sslkit.reliability import PreemptionCheckpoint

        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        self._with_trainer = instantiate_trainer
        logger = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                  "init_args": {"save_dir": "runs", "name": run_name(args)}}
        super().__init__(
            FineTuner,
            pl.LightningDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False, "prog": "sslkit finetune"},
            trainer_defaults={"callbacks": [FitSummary(), PreemptionCheckpoint()],
                              "plugins": [{"class_path": "sslkit.reliability.AtomicCheckpointIO"}],
                              "logger": logger},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )

    def instantiate_trainer(self, **kwargs):
        return super().instantiate_trainer(**kwargs) if self._with_trainer else None

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.datamodule is not None and not isinstance(self.datamodule, LabelledData):
            h = self.model.hparams
            self.datamodule = LabelledData(self.datamodule, h.labels, h.label_seed)

    def _resolve_last(self, subcommand: str) -> None:
        from sslkit.reliability import find_last_checkpoint

        if self.config_init[subcommand].get("ckpt_path") == "last":
            last = find_last_checkpoint(self.trainer)
            if last is None:
                raise FileNotFoundError(f"--resume last: no last.ckpt under "
                                        f"{self.trainer.logger.save_dir if self.trainer.logger else self.trainer.default_root_dir}")
            rank_zero_info(f"sslkit: resuming from {last}")
            self.config_init[subcommand]["ckpt_path"] = str(last)

    def before_fit(self) -> None:
        self._resolve_last("fit")

    def before_validate(self) -> None:
        self._resolve_last("validate")

    def before_test(self) -> None:
        self._resolve_last("test")


def parse(argv: list[str]) -> FinetuneCLI:
    """The command line parsed and its model (backbone loaded) and data built, no trainer:
    what the docs' test resolves."""
    import warnings

    from sslkit.cli import check_overlays, config_files

    args, skip = [], False
    for arg in translate(argv)[1:]:  # without run: no subcommand, and no --resume (Lightning's --ckpt_path)
        if skip or arg.startswith("--ckpt_path="):
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        else:
            args.append(arg)
    check_overlays(config_files(args), "finetune")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return FinetuneCLI(args, run=False, instantiate_trainer=False)


def main(argv: list[str]) -> None:
    import warnings

    from sslkit.cli import check_overlays, config_files

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
    args = translate(argv)
    check_overlays(config_files(args), "finetune")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        FinetuneCLI(args)
