"""Constructor arguments of sslkit 0.2 that this version folds into a config object or renames,
in one table. Python calls, config files, command-line flags and checkpoint hyper-parameters
all go through it, so everything written by 0.2 still runs and loads, with a note naming the
new key (the old names go in the next release)."""
from __future__ import annotations

import copy
import dataclasses
import functools
import warnings

# old flat argument -> (config argument, its field)
FOLDED: dict[str, tuple[str, str]] = {
    "small_images": ("backbone", "small_images"),
    "small_stem_padding": ("backbone", "small_stem_padding"),
    "backbone_kwargs": ("backbone", "kwargs"),
    "backbone_weights": ("backbone", "ckpt_path"),
    "backbone_weights_format": ("backbone", "ckpt_format"),
    "backbone_weights_branch": ("backbone", "branch"),
    "knn_k": ("knn", "k"),
    "knn_temperature": ("knn", "temperature"),
}


def new_name(old: str, renamed: dict[str, str]) -> str | None:
    """The key that replaced ``old`` (``backbone.kwargs`` for a folded one), or ``None``."""
    if old in renamed:
        return renamed[old]
    if old in FOLDED:
        return ".".join(FOLDED[old])
    return None


def _as_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"name": value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value)


def fold(arguments: dict, renamed: dict[str, str], note=None) -> dict:
    """``arguments`` (a method's keyword arguments, or a config's ``init_args``) with 0.2's
    names renamed and its flat backbone and kNN arguments folded into ``backbone`` and
    ``knn``; ``note(old, new)`` is told of each (default: a ``FutureWarning``)."""
    if not any(k in renamed or k in FOLDED for k in arguments):
        return arguments
    note = note or (lambda old, new: warnings.warn(
        f"{old}= is now {new}= (the old name goes in the next release)", FutureWarning, stacklevel=4))
    out = copy.copy(arguments)
    for old, new in renamed.items():
        if old in out:
            note(old, new)
            out[new] = out.pop(old)
    for old, (group, name) in FOLDED.items():
        if old in out:
            note(old, f"{group}.{name}")
            value = out.pop(old)
            merged = _as_dict(out.get(group))
            merged[name] = value
            out[group] = merged
    return out


def accepts_old_names(**renames: str):
    """A function's keyword arguments renamed since 0.2 keep working for one release, with a
    ``FutureWarning`` naming the new one."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    warnings.warn(f"{function.__name__}({old}=...) is now {new}= (the old name goes in the next "
                                  f"release)", FutureWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)
        return wrapper
    return decorate
