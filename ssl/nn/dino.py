"""DINO's head, loss and centre (Caron et al. 2021, arXiv 2104.14294; facebookresearch/dino).

- ``DINOHead``: the projection head of ``vision_transformer.py`` ``DINOHead``, with its
  weight-normalised last layer written out (``WeightNormLinear``) rather than through the
  deprecated ``torch.nn.utils.weight_norm``, under the same parameter names, so the head keys
  of an official checkpoint load 1:1.
- ``dino_loss``: the cross-entropy of ``main_dino.py`` ``DINOLoss.forward``.
- ``dino_center``: the EMA of the teacher's mean output over the global batch
  (``DINOLoss.update_center``).
- ``teacher_temperature``: ``DINOLoss.teacher_temp_schedule``, one value per epoch.
- ``clip_gradients`` and ``cancel_last_layer``: ``utils.clip_gradients`` and
  ``utils.cancel_gradients_last_layer``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_reduce_sum, world_size


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, low: float = -2.0, high: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` from N(0, std^2) truncated to [low, high] by the inverse CDF (one uniform
    draw per element), the method of dino ``utils.trunc_normal_``, so a seed gives DINO's
    initial weights (``torch.nn.init.trunc_normal_`` now draws by rejection instead)."""
    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    tensor.uniform_(2 * cdf(low / std) - 1, 2 * cdf(high / std) - 1).erfinv_()
    return tensor.mul_(std * math.sqrt(2.0)).clamp_(min=low, max=high)


class WeightNormLinear(nn.Module):
    """``x @ W^T`` with ``W = g v / ||v||`` (row norms; no bias): the weight normalisation of
    Salimans & Kingma 2016 as ``torch.nn.utils.weight_norm(nn.Linear(...), dim=0)`` computes
    it, with its parameters ``weight_g`` ``[out, 1]`` (registered first) and ``weight_v``
    ``[out, in]``. ``v`` starts as ``nn.Linear``'s default initialisation, ``g`` at 1."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        weight = nn.Linear(in_features, out_features, bias=False).weight.detach()
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_v = nn.Parameter(weight.clone())

    @property
    def weight(self) -> torch.Tensor:
        v = self.weight_v
        return v * (self.weight_g / v.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False"


class DINOHead(nn.Module):
    """DINO's projection head (dino ``vision_transformer.py`` ``DINOHead``): an MLP of
    ``nlayers`` Linear layers (``in_dim -> hidden_dim -> ... -> bottleneck_dim``), each but the
    last followed by BatchNorm (``use_bn``) and GELU, its Linears initialised by a truncated
    normal (std 0.02) with zero biases; the output is L2-normalised and goes through a
    weight-normalised ``Linear(bottleneck_dim, out_dim, bias=False)`` whose gain ``g`` starts at
    1 and is frozen when ``norm_last_layer`` (so every prototype row has unit norm).

    Modules are built in the official order, so the same seed gives the same weights.
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, use_bn: bool = False, norm_last_layer: bool = True,
                 nlayers: int = 3, hidden_dim: int = 2048, bottleneck_dim: int = 256) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            for index in range(nlayers - 1):
                layers.append(nn.Linear(in_dim if index == 0 else hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor, student_temp: float = 0.1,
              teacher_temp: float = 0.04, n_global: int = 2, parts: bool = False):
    """DINO's loss (dino ``main_dino.py`` ``DINOLoss.forward``).

    ``student_out``: the head's outputs for every crop, crop after crop (``[n_crops B, K]``);
    ``teacher_out``: the teacher's for the ``n_global`` global crops (``[n_global B, K]``). Each
    global crop's teacher distribution ``softmax((t - center) / teacher_temp)`` (centred,
    sharpened, no gradient) is the target of ``log_softmax(s / student_temp)`` of every other
    crop; the cross-entropies, averaged over the batch, are averaged over the
    ``n_global (n_crops - 1)`` pairs. ``parts``: also return ``{"pairs": the pair losses,
    "teacher_entropy": the teacher distributions' mean entropy}``.
    """
    batch = teacher_out.shape[0] // n_global
    if batch * n_global != teacher_out.shape[0] or student_out.shape[0] % batch:
        raise ValueError(f"dino_loss: {teacher_out.shape[0]} teacher rows for {n_global} global crops and "
                         f"{student_out.shape[0]} student rows are not whole crops of one batch size")
    student = [F.log_softmax(s, dim=-1) for s in (student_out / student_temp).chunk(student_out.shape[0] // batch)]
    teacher = F.softmax((teacher_out - center) / teacher_temp, dim=-1).detach().chunk(n_global)
    total, pairs = 0, []
    for i, q in enumerate(teacher):
        for v, log_p in enumerate(student):  # each crop's log-softmax once (DINOLoss recomputes it per pair)
            if v == i:  # never a crop against itself
                continue
            pairs.append(torch.sum(-q * log_p, dim=-1).mean())
            total += pairs[-1]
    total /= len(pairs)
    if not parts:
        return total
    with torch.no_grad():
        q = torch.cat(teacher)
        entropy = -(q * q.clamp_min(1e-30).log()).sum(-1).mean()
    return total, {"pairs": torch.stack(pairs).detach(), "teacher_entropy": entropy}


@torch.no_grad()
def dino_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """The next centre (dino ``main_dino.py`` ``DINOLoss.update_center``): ``center * m +
    mean * (1 - m)`` with the mean of the teacher's outputs over the global batch (the sum
    all-reduced over ranks, divided by rows x world size)."""
    batch_center = all_reduce_sum(torch.sum(teacher_out.detach(), dim=0, keepdim=True))
    batch_center = batch_center / (len(teacher_out) * world_size())
    return center * momentum + batch_center * (1 - momentum)


def teacher_temperature(epoch: int, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
                        warmup_epochs: int = 0) -> float:
    """The teacher temperature of ``epoch`` (dino ``main_dino.py`` ``DINOLoss.teacher_temp_schedule``):
    ``np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)`` then ``teacher_temp``."""
    if epoch >= warmup_epochs:
        return teacher_temp
    if warmup_epochs == 1:
        return warmup_teacher_temp
    return warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * epoch / (warmup_epochs - 1)


@torch.no_grad()
def clip_gradients(parameters: Iterable[torch.Tensor], clip: float) -> list[torch.Tensor]:
    """Each gradient scaled to norm at most ``clip`` on its own (dino ``utils.clip_gradients``:
    coefficient ``clip / (||g|| + 1e-6)`` when below 1); returns the norms before clipping
    (tensors: no host synchronisation)."""
    norms = []
    for p in parameters:
        if p.grad is not None:
            norm = p.grad.norm(2)
            norms.append(norm)
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))
    return norms


def cancel_last_layer(head: nn.Module) -> None:
    """Drop the gradients of the head's last layer (dino ``utils.cancel_gradients_last_layer``)."""
    for name, p in head.named_parameters():
        if "last_layer" in name:
            p.grad = None
