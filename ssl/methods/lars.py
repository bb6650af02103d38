"""LARS (You et al. 2017, arXiv 1708.03888) in the two forms the SSL recipes use.

Both scale each tensor's update by a trust ratio, then apply SGD momentum
(``buf <- momentum * buf + update``, first ``buf = update``; ``p <- p - lr * buf``):

- ``trust_ratio="byol"``: weight decay is added first, ``u = g + wd w``, and
  ``u <- u * eta ||w|| / ||u||`` (ratio 1 where either norm is 0). BYOL's
  ``byol/utils/optimizers.py`` (``add_weight_decay`` then ``scale_by_lars``), also SimCLR's.
- ``trust_ratio="larc"``: ``ratio = eta ||w|| / (||g|| + wd ||w|| + eps)`` and
  ``u = (g + wd w) * ratio``; where either norm is 0 the gradient is used as it is, without
  weight decay. NVIDIA apex's ``LARC`` around ``torch.optim.SGD`` (SwAV's ``main_swav.py``)
  and solo-learn's ``solo/utils/lars.py`` (its CIFAR recipes).

``clip=True`` turns the ratio into ``min(ratio / lr, 1)`` (LARC's ``clip``, solo-learn's
``clip_lr``), so no tensor steps faster than plain SGD at the scheduled rate. Parameter groups
with ``exclude=True`` (biases and normalisation weights where a recipe excludes them) get
neither weight decay nor the trust ratio: plain momentum SGD. Groups with ``adapt=False``
(the online classifier) get their weight decay but no trust ratio: momentum SGD with decay.
"""
from __future__ import annotations

from typing import Literal

import torch

TrustRatio = Literal["byol", "larc"]


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, trust_ratio: TrustRatio = "byol", clip: bool = False,
                 eps: float = 1e-8) -> None:
        if trust_ratio not in ("byol", "larc"):
            raise ValueError(f"trust_ratio must be 'byol' or 'larc', got '{trust_ratio}'")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        trust_ratio=trust_ratio, clip=clip, eps=eps, exclude=False, adapt=True)
        super().__init__(params, defaults)

    @staticmethod
    def _adapt(p: torch.Tensor, grad: torch.Tensor, group: dict) -> torch.Tensor:
        wd, eta = group["weight_decay"], group["trust_coefficient"]
        update = grad.add(p, alpha=wd)
        w_norm = torch.linalg.vector_norm(p)
        if group["trust_ratio"] == "byol":
            u_norm = torch.linalg.vector_norm(update)
            usable = (w_norm > 0) & (u_norm > 0)
            ratio = torch.where(usable, eta * w_norm / torch.where(usable, u_norm, 1.0), 1.0)
        else:
            g_norm = torch.linalg.vector_norm(grad)
            usable = (w_norm > 0) & (g_norm > 0)
            ratio = eta * w_norm / (g_norm + w_norm * wd + group["eps"])
        if group["clip"]:
            ratio = torch.clamp(ratio / group["lr"], max=1.0)
        if group["trust_ratio"] == "larc":
            return torch.where(usable, update * ratio, grad)
        return update * ratio

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["exclude"]:
                    update = p.grad
                elif not group["adapt"]:
                    update = p.grad.add(p, alpha=group["weight_decay"])
                else:
                    update = self._adapt(p, p.grad, group)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
