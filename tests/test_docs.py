"""The README and docs/*.md as tests: every ``sslkit ...`` command they show is resolved
(parsed, its config built, its paths substituted with real ones), so a command the docs show
and the code no longer accepts fails here; every Python block of the README runs."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import REPO

DOCS = [Path(REPO) / "README.md", *sorted((Path(REPO) / "docs").glob("*.md"))]
SUBCOMMANDS = ("fit", "validate", "test", "probe", "spectrum", "backgrounds", "preview", "masks", "export", "report",
               "landscape", "finetune")
COMMAND = re.compile(r"^(?:srun\s+)?sslkit\s+(" + "|".join(SUBCOMMANDS) + r")\b")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block of a Markdown text."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), []
            else:
                blocks.append((language, "\n".join(body) + "\n"))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every sslkit command line in a fenced block or an inline code
    span; a bare name (``sslkit fit``) or a synopsis (``fit|validate``, ``[...]``) is prose."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        lines = [line for language, body in fenced_blocks(text) if language in ("", "bash", "sh", "console")
                 for line in body.splitlines()]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        lines += re.findall(r"`([^`\n]+)`", prose)
        for line in lines:
            line = line.split(" #")[0].strip()
            if COMMAND.match(line) and len(line.split()) > 2 and not re.search(r"[|\[\]]", line):
                found.append((f"{doc.name}: {line}", line))
    return sorted(set(found))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Real files for the placeholders the docs use."""
    from photos import photo_folder

    root = tmp_path_factory.mktemp("docs")
    photo_folder(root / "imagenet")
    (root / "masks").mkdir()
    ckpt = root / "last.ckpt"
    from helpers import tiny_moco
    import pytorch_lightning as pl

    module = tiny_moco()
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(ckpt)
    return {"root": root, "ckpt": ckpt}


def reader_files() -> dict[str, str]:
    """Files the docs ask the reader to write: fenced blocks whose first line is ``# <name>``."""
    files = {}
    for doc in DOCS:
        for _, body in fenced_blocks(doc.read_text()):
            first = body.splitlines()[0] if body.strip() else ""
            if re.fullmatch(r"# [\w.-]+\.(py|yaml)", first):
                files[first[2:]] = body
    return files


def substituted(command: str, paths: dict) -> list[str]:
    """The command's words with the docs' placeholders replaced by real paths."""
    root, words, dirs = paths["root"], [], 0
    for word in shlex.split(command):
        if word == "srun":
            continue
        for placeholder, real in (("/data/imagenet_masks", root / "masks"), ("/data/imagenet", root / "imagenet"),
                                  ("/path/to/imagenet", root / "imagenet")):
            word = word.replace(placeholder, str(real))
        if word in ("CKPT", "last.ckpt", "A.ckpt", "B.ckpt") or word.endswith("/last.ckpt"):
            word = str(paths["ckpt"])
        elif word == "CONFIG":
            word = "configs/demo.yaml"
        elif word == "DIR":
            word = str(root / "imagenet" / "train") if dirs == 0 else str(root / "out")
            dirs += 1
        if word.startswith("configs/"):
            word = str(Path(REPO) / word)
        words.append(word)
    return words


def resolve(words: list[str]) -> None:
    """Parse the command and build everything it names, without running it."""
    import importlib

    from sslkit.cli import TOOLS, SSLKitCLI, check_overlays, config_files

    assert words[0] == "sslkit"
    subcommand, args = words[1], words[2:]
    if subcommand in TOOLS:
        importlib.import_module(TOOLS[subcommand]).parse(args)
        return
    check_overlays(config_files(args), subcommand)
    kept, skip = [], False
    for arg in args:  # the subcommand's own --ckpt_path is checked by fit, not by the config parser
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            SSLKitCLI(args=kept, run=False, instantiate_trainer=False)
    except SystemExit as exit_info:  # --print_config prints and exits
        assert exit_info.code in (0, None)


COMMANDS = documented_commands()


def test_the_docs_show_the_commands_this_test_resolves():
    assert len(COMMANDS) >= 25
    shown = {COMMAND.match(c).group(1) for _, c in COMMANDS}
    assert {"fit", "validate", "probe", "spectrum", "backgrounds", "preview", "masks", "export"} <= shown


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=[w for w, _ in COMMANDS])
def test_every_documented_command_is_accepted(command, paths, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sslkit"])
    for name, body in reader_files().items():
        (tmp_path / name).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    resolve(substituted(command, paths))


def python_blocks() -> list[str]:
    return [body for language, body in fenced_blocks((Path(REPO) / "README.md").read_text()) if language == "python"]


def release_files(folder: Path) -> None:
    """The release files the README's examples load, in their projects' layouts."""
    from test_checkpoints import body, moco, random_resnet18, swav_release

    torch.save(moco(random_resnet18()), folder / "moco_v2_800ep_pretrain.pth.tar")
    resnet50 = torchvision.models.resnet50()
    swav = swav_release(random_resnet18())
    swav = {k: v for k, v in swav.items() if not k.startswith("module.") or "projection_head" in k or "prototypes" in k}
    swav.update({f"module.{k}": v for k, v in body(resnet50.state_dict()).items()})
    swav["module.projection_head.0.weight"] = torch.randn(64, 2048)
    torch.save(swav, folder / "swav_800ep_pretrain.pth.tar")


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    release_files(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_the_landscape_page_quotes_its_committed_results():
    """docs/landscape.md states only what its committed results support: every table on the
    page is rendered again here from the committed results files, intervals included."""
    sys.path.insert(0, str(Path(REPO) / "experiments"))
    from landscape_tables import tables

    page = (Path(REPO) / "docs" / "landscape.md").read_text()
    files = sorted((Path(REPO) / "docs" / "data").glob("landscape_study*.json"))
    assert files, "docs/data/landscape_study*.json: the results the page cites are not committed"
    for path in files:
        assert f"docs/data/{path.name}" in page, f"docs/landscape.md does not cite {path.name}"
        for table in tables(json.loads(path.read_text())):
            assert table in page, f"docs/landscape.md lacks this table of {path.name}, or quotes it otherwise:\n{table}"
