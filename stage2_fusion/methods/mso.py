"""MSO (Gao et al., ACM MM 2021): AGW with edge features at the stems and the CMCC loss.

Code: cjjjao/DIP_work@5d515159 (model.py, PEF.py, loss.py, train.py). The network is
:class:`stage2_fusion.methods.agw.AGWNet` with an edge branch (:mod:`stage2_fusion.edges`),
the loss :func:`stage2_fusion.methods.agw.agw_loss` with its PEF and CMCC terms; the recipe
(:class:`MSORecipe`, ``[fusion.recipes.mso]``) is AGW's keys with MSO's values and an edge
operator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.errors import UserError
from stage2_fusion.methods import agw
from stage2_fusion.methods.agw import AGWNet, AGWRecipe


@dataclass(frozen=True)
class MSORecipe(AGWRecipe):
    """AGW's keys (:class:`stage2_fusion.methods.agw.AGWRecipe`); MSO needs an edge operator
    (its PEF.py: Laplace as released, Sobel the paper's best)."""

    def check(self, where: str) -> None:
        super().check(where)
        if self.edge == "none":
            raise UserError(f"{where}.edge is 'none': MSO is AGW with edge features; choose laplace, sobel or prewitt")


class MSONet(AGWNet):
    """MSO: AGW with edge features at the stems (PEF through VGG16, or fused) and CMCC.

    Gao et al., "MSO: Multi-Feature Space Joint Optimization Network for RGB-Infrared
    Person Re-Identification", ACM MM 2021; cjjjao/DIP_work@5d515159 (model.py, PEF.py,
    loss.py, train.py). The operator is ``recipe.edge`` (MSO edits PEF.py for it; which
    kernels our "sobel" and "prewitt" are, and why: :mod:`stage2_fusion.edges`).

    Learning rate: the paper profile uses train.py's argparse default ``--lr 0.0005`` with
    its Adam (bottleneck and classifier at lr, everything else, the VGG16 of PEF included,
    at 0.1 lr; x0.1 at epoch 20, x0.01 from 25). MSO's README trains with ``--lr 0.1``, the
    command of AGW's SGD baseline copied over: with this Adam it would give 0.1 to the
    heads and 0.01 to the body, far above the rate its Adam line was written for (the
    argparse help says "0.00035 for adam"). We take the code's default; ``lr`` in
    ``[fusion.recipes.mso]`` changes it.
    """

    method = "mso"


#: AGW's spec (loss, modifiers) with MSO's network and recipe.
SPEC = dataclasses.replace(agw.SPEC, name="mso", summary="MSO (Gao et al., ACM MM 2021): AGW + edge features (PEF through VGG16) + CMCC, Adam",
                           recipe_type=MSORecipe, build=MSONet)
