"""DSGAN losses: least-squares adversarial, cycle-consistency and identity.

Least-squares GAN (Mao et al., ICCV 2017), cycle and identity losses (Zhu et al.,
CycleGAN, ICCV 2017, Eq. 1-3 and Sec. 5.2), weighted and averaged as in the CycleGAN code
TSME's GAN path names (eriklindernoren/PyTorch-GAN, implementations/cyclegan/cyclegan.py):

    L_G = (L_adv(vis->ir) + L_adv(ir->vis)) / 2
          + lambda_cycle    * (|G_ir2vis(G_vis2ir(v)) - v|_1 + |G_vis2ir(G_ir2vis(i)) - i|_1) / 2
          + lambda_identity * (|G_ir2vis(v) - v|_1 + |G_vis2ir(i) - i|_1) / 2
    L_D = (MSE(D(real), 1) + MSE(D(fake), 0)) / 2        per discriminator

with lambda_cycle = 10 and lambda_identity = 5. All L1/MSE terms are means over elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lsgan_loss(scores: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean((scores - t)^2), t = 1 for real, 0 for fake.

    Args:
        scores: discriminator output, any shape, float.

    Returns:
        Scalar float tensor >= 0.
    """
    target = torch.ones_like(scores) if target_is_real else torch.zeros_like(scores)
    return F.mse_loss(scores.float(), target.float())


def generator_loss(
    *,
    d_ir_on_fake_ir: torch.Tensor,
    d_vis_on_fake_vis: torch.Tensor,
    vis: torch.Tensor,
    ir: torch.Tensor,
    cycled_vis: torch.Tensor,
    cycled_ir: torch.Tensor,
    identity_vis: torch.Tensor,
    identity_ir: torch.Tensor,
    lambda_cycle: float,
    lambda_identity: float,
) -> dict[str, torch.Tensor]:
    """The generators' objective (see the module docstring).

    Args:
        d_ir_on_fake_ir, d_vis_on_fake_vis: discriminator scores of the translations.
        vis, ir: real images (B, 3, H, W) in [-1, 1].
        cycled_vis: G_ir2vis(G_vis2ir(vis)); cycled_ir: G_vis2ir(G_ir2vis(ir)).
        identity_vis: G_ir2vis(vis); identity_ir: G_vis2ir(ir).

    Returns:
        dict with scalar tensors ``adv``, ``cycle``, ``identity`` (unweighted) and
        ``total`` (weighted sum).
    """
    adv = (lsgan_loss(d_ir_on_fake_ir, True) + lsgan_loss(d_vis_on_fake_vis, True)) / 2
    cycle = (F.l1_loss(cycled_vis.float(), vis.float()) + F.l1_loss(cycled_ir.float(), ir.float())) / 2
    identity = (F.l1_loss(identity_vis.float(), vis.float()) + F.l1_loss(identity_ir.float(), ir.float())) / 2
    total = adv + lambda_cycle * cycle + lambda_identity * identity
    return {"adv": adv, "cycle": cycle, "identity": identity, "total": total}


def discriminator_loss(scores_real: torch.Tensor, scores_fake: torch.Tensor) -> torch.Tensor:
    """(MSE(D(real), 1) + MSE(D(fake), 0)) / 2 for one discriminator; scalar >= 0."""
    return (lsgan_loss(scores_real, True) + lsgan_loss(scores_fake, False)) / 2
