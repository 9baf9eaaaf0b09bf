"""The generator's DMD loss and the critic's flow-matching loss (facts sheet 7)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dmd_gradient(x0: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(fake - real) / mean|x0 - real|, the mean taken per sample: the direction the generated x0 must move
    against. Computed without grad."""
    with torch.no_grad():
        dims = tuple(range(1, x0.dim()))
        norm = (x0 - real).abs().mean(dim=dims, keepdim=True).clamp_min(1e-12)
        return torch.nan_to_num((fake - real) / norm)


def dmd_loss(x0: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 * MSE(x0, stopgrad(x0 - grad)): its gradient with respect to x0 is the DMD gradient (over the count)."""
    grad = dmd_gradient(x0, real, fake)
    return 0.5 * F.mse_loss(x0, (x0 - grad).detach())


def flow_matching_loss(v_pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The critic's denoising loss on a generated sample: MSE of the predicted velocity to noise - x0."""
    return F.mse_loss(v_pred.float(), (noise - x0).float())
