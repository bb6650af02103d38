"""From one uint8 batch to the views a method trains on.

``MultiView`` holds the per-view recipes (``View`` or ``RepeatedView``) and the
deterministic evaluation view. With a ``BackgroundSwap`` it prepares different inputs per
view: view 0 (the query) sees the image after its own background stages, every later view
the image with a swapped background (then its own background stages), and the hard
negative is another image's object on the query's background *as the query shows it*
(after BG_RM or BG_Random fired on the query). The negative then goes through the recipe of
view 1 (the key's) without its background stages, and travels in
``views[1]["hard_negative"]`` with its validity in ``views[1]["hard_negative_valid"]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import images
from .background import BackgroundSwap
from .geometry import CenterCrop, RandomResizedCrop
from .stages import Normalize, Stage, View, ViewDict


def _stateless(recipe: nn.Module) -> None:
    """A recipe has no learned state: every tensor it holds (Kornia keeps sampling ranges in
    buffers) becomes a non-persistent buffer, so checkpoints neither carry nor require it and
    changing the recipe never breaks loading a checkpoint."""
    for module in recipe.modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            delattr(module, name)
            module.register_buffer(name, parameter.detach(), persistent=False)
        for name, buffer in list(module.named_buffers(recurse=False)):
            module.register_buffer(name, buffer, persistent=False)


def count_views(module: nn.Module) -> int:
    """How many views ``module`` (a ``View``, ``RepeatedView`` or ``MultiView``) makes."""
    if isinstance(module, MultiView):
        return module.num_views
    return 1


def make_views(
    module: nn.Module, inputs: Sequence[ViewDict], extra: ViewDict | None = None, extra_index: int = 0
) -> tuple[list[ViewDict], ViewDict | None]:
    """Run ``module`` on one input per view it makes; ``extra`` (if any) goes through the
    recipe of view ``extra_index`` too, in the same pass where the recipe allows."""
    if isinstance(module, MultiView):
        return module.make(inputs, extra, extra_index)
    return [module(inputs[0])], (module(extra) if extra is not None else None)


def recipe_of(module: nn.Module, index: int) -> View:
    """The ``View`` that makes view ``index`` of ``module``."""
    if isinstance(module, View):
        return module
    if isinstance(module, RepeatedView):
        return module.views[0]
    for child in module.views:
        if index < count_views(child):
            return recipe_of(child, index)
        index -= count_views(child)
    raise IndexError("view index out of range")


class MultiView(nn.Module):
    """The views one method trains on, plus the deterministic view used for evaluation.

    ``forward(batch)`` returns the list of view dicts, each computed from the same uint8
    batch with independent randomness. An entry of ``views`` may itself produce several
    views (a ``RepeatedView``); its views are spliced into the list in order.
    ``background_swap`` (BG_Swaps) changes the inputs of the views as described above.
    """

    def __init__(
        self,
        views: Sequence[nn.Module],
        eval_view: View | None = None,
        background_swap: BackgroundSwap | None = None,
    ) -> None:
        super().__init__()
        if len(views) < 1:
            raise ValueError("MultiView needs at least one view")
        self.views = nn.ModuleList(views)
        self.eval_view = eval_view if eval_view is not None else View([Normalize()])
        self.background_swap = background_swap
        _stateless(self)

    @property
    def num_views(self) -> int:
        return sum(count_views(view) for view in self.views)

    @property
    def reads_masks(self) -> bool:
        """Whether a stage of the recipe reads the foreground mask (background augmentations)."""
        return self.background_swap is not None or any(
            isinstance(m, Stage) and m.uses_mask for m in self.modules())

    def forward(self, batch: ViewDict) -> list[ViewDict]:
        base = {"image": batch["image"]}
        if batch.get("mask") is not None and self.reads_masks:
            base["mask"] = batch["mask"]
        if self.background_swap is None:
            return self.make([base] * self.num_views)[0]
        if self.num_views < 2:
            raise ValueError("BackgroundSwap needs a recipe with at least two views")
        query = {**recipe_of(self, 0).background(base), "background_done": True}
        swap = self.background_swap(base, query["image"])
        negative = {**swap.negative, "background_done": True} if swap.negative is not None else None
        out, made = self.make([query] + [swap.positive] * (self.num_views - 1), negative, 1)
        if made is not None:
            out[1]["hard_negative"] = made["image"]
            out[1]["hard_negative_valid"] = swap.negative_valid
        return out

    def make(
        self, inputs: Sequence[ViewDict], extra: ViewDict | None = None, extra_index: int = 0
    ) -> tuple[list[ViewDict], ViewDict | None]:
        """The views from one input per view (no background swap at this level), and
        ``extra`` passed through the recipe of view ``extra_index``."""
        if len(inputs) != self.num_views:
            raise ValueError(f"{type(self).__name__} makes {self.num_views} views, got {len(inputs)} inputs")
        out: list[ViewDict] = []
        extra_out = None
        start = 0
        for view in self.views:
            count = count_views(view)
            mine = extra if start <= extra_index < start + count else None
            made, made_extra = make_views(view, inputs[start:start + count], mine, extra_index - start)
            out.extend(made)
            extra_out = made_extra if mine is not None else extra_out
            start += count
        return out, extra_out

    def use_statistics(self, mean, std) -> None:
        """Normalise with the data's ``mean`` and ``std`` wherever the recipe gave none."""
        for module in self.modules():
            if isinstance(module, Normalize):
                module.use_statistics(mean, std)

    @torch.no_grad()
    def evaluate(self, batch: ViewDict) -> torch.Tensor:
        """The evaluation image: resize (whole images), centre crop and normalisation, no randomness."""
        return self.eval_view(batch)["image"]

    def check_canvas(self, canvas: int) -> None:
        """Fail early if a crop is larger than the data's ``canvas`` x ``canvas`` images."""
        for module in self.modules():
            if isinstance(module, (RandomResizedCrop, CenterCrop)) and module.size > canvas:
                raise ValueError(
                    f"{type(module).__name__} size {module.size} is larger than the data's "
                    f"{canvas}x{canvas} image canvas (data.image_size); lower the crop size or "
                    f"raise data.image_size"
                )


class RepeatedView(MultiView):
    """``num_views`` views from one recipe, computed in a single pass over the inputs
    concatenated along the batch: every sample of every view still draws its own
    parameters, but the per-call overhead of each stage is paid once."""

    def __init__(
        self,
        view: View,
        num_views: int = 2,
        eval_view: View | None = None,
        background_swap: BackgroundSwap | None = None,
    ) -> None:
        super().__init__([view], eval_view, background_swap)
        if num_views < 1:
            raise ValueError(f"num_views must be at least 1, got {num_views}")
        self._num_views = num_views

    @property
    def num_views(self) -> int:
        return self._num_views

    def make(
        self, inputs: Sequence[ViewDict], extra: ViewDict | None = None, extra_index: int = 0
    ) -> tuple[list[ViewDict], ViewDict | None]:
        if len(inputs) != self.num_views:
            raise ValueError(f"RepeatedView makes {self.num_views} views, got {len(inputs)} inputs")
        everything = list(inputs) + ([extra] if extra is not None else [])
        keys = [k for k in ("image", "mask") if inputs[0].get(k) is not None]
        if all(item is everything[0] for item in everything):
            joined = {k: images.repeat(everything[0][k], len(everything)) for k in keys}
            joined["background_done"] = everything[0].get("background_done", False)
        else:
            everything = self._background(everything, keys)
            joined = {k: images.concat([item[k] for item in everything]) for k in keys}
            joined["background_done"] = True
        joined["blocks"] = len(everything)
        out = self.views[0](joined)
        chunks = {k: images.split(v, len(everything)) for k, v in out.items() if k in ("image", "mask")}
        views = [{k: chunks[k][i] for k in chunks} for i in range(len(everything))]
        return views[:self.num_views], (views[-1] if extra is not None else None)

    def _background(self, items: list[ViewDict], keys: list[str]) -> list[ViewDict]:
        """Every input through the recipe's background stages, in one pass over those not
        yet through them (BG_Swaps' query and hard negative already are)."""
        pending = [i for i, item in enumerate(items) if not item.get("background_done")]
        if not pending:
            return items
        joined = {k: images.concat([items[i][k] for i in pending]) for k in keys}
        joined["blocks"] = len(pending)
        done = self.views[0].background(joined)
        parts = {k: images.split(done[k], len(pending)) for k in keys}
        items = list(items)
        for n, i in enumerate(pending):
            items[i] = {**{k: parts[k][n] for k in keys}, "background_done": True}
        return items
