"""The ``sslkit`` command: LightningCLI's fit/validate/test for any method and DataModule,
plus the tools around training.

    sslkit fit -c configs/demo.yaml
    sslkit validate -c configs/demo.yaml          # kNN accuracy at random initialisation
    sslkit fit -c configs/demo.yaml --trainer.accelerator=gpu
    sslkit preview -c configs/demo_bg.yaml --out views.png
    sslkit masks --images DIR --out DIR --model u2net
    sslkit backgrounds -c configs/demo_bg.yaml --ckpt_path runs/.../last.ckpt
    sslkit probe -c configs/linear_probe.yaml --ckpt_path runs/.../last.ckpt
    sslkit spectrum -c configs/linear_probe.yaml --ckpt_path runs/.../last.ckpt
    sslkit export --ckpt_path runs/.../last.ckpt --out backbone.pth --format torchvision
    sslkit report -c configs/linear_probe.yaml --ckpt_path A.ckpt B.ckpt --out runs/report
    sslkit landscape -c configs/demo.yaml --ckpt_path runs/.../last.ckpt --out runs/landscape
    sslkit finetune -c configs/finetune_semisup_simclr.yaml --ckpt_path runs/.../last.ckpt --labels 1%
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from argparse import ArgumentError
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities import rank_zero_info

import sslkit.data  # noqa: F401  (registers the DataModules for short class names)
from sslkit.legacy import fold, new_name
from sslkit.data import ImageDecodeError
from sslkit.reliability import PreemptionCheckpoint, find_last_checkpoint
from sslkit.methods import SSLMethod


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
        self.train_images += len(batch["label"]) if "label" in batch else len(batch["image"])

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


def config_files(argv: list[str]) -> list[str]:
    """The ``-c``/``--config`` files named on a command line, in order."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


OVERLAY_MARK = "# overlay on:"


def check_overlays(files: list[str], subcommand: str) -> None:
    """A config whose first line is ``# overlay on: configs/BASE.yaml`` holds only the values
    it changes; it cannot come first."""
    if not files or not Path(files[0]).is_file():
        return
    with open(files[0]) as f:
        first = f.readline().strip()
    if first.startswith(OVERLAY_MARK):
        bases = [w.rstrip(",") for w in first[len(OVERLAY_MARK):].split() if w.endswith((".yaml", ".yaml,"))]
        example = f"sslkit {subcommand} -c {bases[0]} -c {files[0]}" if bases else f"-c FULL_CONFIG -c {files[0]}"
        raise ValueError(f"{files[0]} is an overlay: it only changes a full config ({first[len(OVERLAY_MARK):].strip()}). "
                         f"Give that config first: {example}")


def run_name(argv: list[str]) -> str:
    """Default log folder under ``runs/``: the config names joined by ``+``
    (``-c configs/byol_cifar10.yaml -c configs/cifar100.yaml`` -> ``byol_cifar10+cifar100``)."""
    stems = [Path(f).stem for f in config_files(argv)]
    return "+".join(stems) or "sslkit"


def _legacy_names(class_path: str | None) -> dict[str, str]:
    """Old -> new constructor argument names of a model class (``SSLMethod.legacy_names``)."""
    if not class_path:
        return {}
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or "sslkit.methods"), name)
    except (ImportError, AttributeError):
        return {}
    return dict(getattr(cls, "legacy_names", {}))


def _config_with_new_names(path: str, data, class_path: str | None) -> tuple[object, str | None, bool]:
    """A config file's content with 0.2's model keys renamed and folded (``sslkit.legacy``),
    and ``backbone: NAME`` written as ``backbone: {name: NAME}`` so that later files and flags
    can change one field of it; its model class path; whether anything changed."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return data, class_path, False
    class_path = model.get("class_path", class_path)
    init = model.get("init_args")
    if not isinstance(init, dict):
        return data, class_path, False

    def note(old: str, new: str) -> None:
        print(f"sslkit: {path}: model.init_args.{old} is now {new} (the old name goes in the next release)",
              file=sys.stderr)

    folded = fold(init, _legacy_names(class_path), note)
    if isinstance(folded.get("backbone"), str):
        folded = {**folded, "backbone": {"name": folded["backbone"]}}
    if folded == init:
        return data, class_path, False
    return {**data, "model": {**model, "init_args": folded}}, class_path, True


def renamed_config_keys(argv: list[str]) -> list[str]:
    """Model arguments renamed or folded since 0.2 (``tau_base`` -> ``momentum``, ``knn_k`` ->
    ``knn.k``, ``small_images`` -> ``backbone.small_images``, ...) keep working for one release
    in config files and ``--model.init_args.*`` flags, each with a note naming the new key. A
    changed file is passed on as YAML text."""
    import yaml

    out, class_path, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        path = argv[i + 1] if arg in ("-c", "--config") and i + 1 < len(argv) else None
        if path is not None and Path(path).is_file():
            data, class_path, changed = _config_with_new_names(path, yaml.safe_load(Path(path).read_text()), class_path)
            if changed:
                out += [arg, yaml.safe_dump(data, sort_keys=False)]
                i += 2
                continue
        flag, eq, value = arg.partition("=")
        if flag.startswith("--model.class_path") or flag == "--model":
            class_path = value if eq else (argv[i + 1] if i + 1 < len(argv) else class_path)
        elif flag.startswith("--model.init_args.") and flag.count(".") == 2:
            key = flag.rsplit(".", 1)[1]
            new = new_name(key, _legacy_names(class_path))
            if new is not None:
                print(f"sslkit: {flag} is now --model.init_args.{new} (the old name goes in the next release)",
                      file=sys.stderr)
                arg = f"--model.init_args.{new}" + eq + value
            elif key == "backbone" and not (value or (argv[i + 1] if i + 1 < len(argv) else "")).lstrip().startswith("{"):
                # a name changes the name, not the whole backbone config
                arg = "--model.init_args.backbone.name" + eq + value
        out.append(arg)
        i += 1
    return out


class SSLKitCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, instantiate_trainer: bool = True) -> None:
        if os.getcwd() not in sys.path:  # a method or stage of the user's own (class_path: mymodule.MyMethod),
            sys.path.append(os.getcwd())  # as `python -m` would find it; last, so nothing of theirs shadows a library
        self._with_trainer = instantiate_trainer
        argv = list(sys.argv[1:] if args is None else args)
        renamed = renamed_config_keys(argv)
        if renamed != argv:
            if args is None:
                sys.argv = sys.argv[:1] + renamed
            else:
                args = renamed
        logger = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                  "init_args": {"save_dir": "runs", "name": run_name(argv)}}
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            trainer_defaults={"callbacks": [FitSummary(), PreemptionCheckpoint()],
                              "plugins": [{"class_path": "sslkit.reliability.AtomicCheckpointIO"}],
                              "logger": logger},
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )

    def instantiate_trainer(self, **kwargs) -> pl.Trainer | None:
        if not self._with_trainer:  # inspection tools: model and data only, on whatever device is here
            return None
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:
            if "gpu" not in str(err).lower():
                raise
            trainer = self.config_init[self.subcommand]["trainer"] if self.subcommand else {}
            raise MisconfigurationException(
                f"{err} The config asks for trainer.accelerator={trainer.get('accelerator')}, "
                f"devices={trainer.get('devices')}, num_nodes={trainer.get('num_nodes', 1)}, and this machine has no "
                f"GPU. To try the recipe here add --trainer.accelerator=cpu --trainer.devices=1 --trainer.num_nodes=1 "
                f"--trainer.strategy=auto --trainer.sync_batchnorm=false (and a smaller --data.init_args.batch_size); "
                f"the learning rate follows the global batch."
            ) from err

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
        if isinstance(self.model, SSLMethod):  # before Lightning creates the log folder (setup checks again)
            self.model.check_data(self.datamodule, self.trainer.world_size)


TOOLS = {
    "preview": "sslkit.commands.preview",
    "masks": "sslkit.commands.masks",
    "backgrounds": "sslkit.commands.backgrounds",
    "probe": "sslkit.commands.probe",
    "spectrum": "sslkit.commands.spectrum",
    "export": "sslkit.commands.export",
    "report": "sslkit.commands.report",
    "landscape": "sslkit.commands.landscape",
    "finetune": "sslkit.commands.finetune",
}


def plain_message(err: BaseException) -> str:
    """The sentence a user needs from ``err``: of jsonargparse's report on a config value
    (a Union-validation tree), the key and the innermost reason only; of an error a
    DataLoader worker re-raised, the worker's own message without its traceback."""
    text = str(err).strip()
    if "Original Traceback (most recent call last):" in text:  # raised in a DataLoader worker: its own message
        last = text.splitlines()[-1].strip()
        return re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    if "Does not validate against any of the Union subtypes" not in text and "Parser key" not in text:
        return text
    keys = re.findall(r'Parser key "([^"]+)"', text)
    given = re.search(r"NestedArg\(key='([^']+)'", text)
    cls = re.search(r"Problem with given class_path '([^']+)'", text)
    reasons = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value",
                                        "- Expected a <class 'NoneType'>", "- Problem with given class_path")):
            continue
        reasons.append(line.removeprefix("- "))
    key = keys[0] if keys else ""
    if given:
        key += f".init_args.{given.group(1)}" if given.group(1) != "class_path" else ".class_path"
    elif len(keys) > 1:
        key += ".init_args." + ".".join(keys[1:])
    where = f" (in {cls.group(1)})" if cls and "class_path" not in key else ""
    reason = reasons[0] if reasons else text.splitlines()[0]
    return f"{key}: {reason}{where}" if key else reason


USER_ERRORS = (ValueError, OSError, FloatingPointError, ImageDecodeError, MisconfigurationException, ArgumentError)


def main(args: list[str] | None = None) -> None:
    """``sslkit`` entry point. A user error (missing path, bad value, typo, non-finite loss)
    ends in one plain line naming the key and what to do; ``--debug`` (or ``SSLKIT_DEBUG=1``)
    shows the traceback instead."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("SSLKIT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv and argv[0] in TOOLS:
            importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
            return
        if argv and argv[0] in ("-h", "--help"):
            print(f"sslkit tools (each has --help): {', '.join(TOOLS)}\n")
        check_overlays(config_files(argv), argv[0] if argv else "fit")
        if args is None:
            sys.argv = sys.argv[:1] + argv
        SSLKitCLI(args=None if args is None else argv)
    except USER_ERRORS as err:
        if debug:
            raise
        hint = f"sslkit {argv[0]} --help lists the options" if isinstance(err, ArgumentError) and argv else \
            "sslkit --debug ... shows the traceback"
        print(f"sslkit: error: {plain_message(err)}\n({hint})", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
