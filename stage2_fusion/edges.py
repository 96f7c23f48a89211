"""Edge maps for MSO's perceptual edge features (PEF), on kornia, always in float32.

Source: Gao et al., "MSO: Multi-Feature Space Joint Optimization Network for RGB-Infrared
Person Re-Identification", ACM MM 2021; code cjjjao/DIP_work (commit 5d515159):

* ``PEF.py`` ``PEF_Loss.forward``: a 1 -> 1 channel 3x3 ``nn.Conv2d(padding=1, stride=4,
  bias=False)`` under ``torch.no_grad``, its weight set to fixed kernels: the Laplace kernel
  (the active one), or four directional Sobel or Prewitt kernels (commented out) whose
  *signed* responses are summed (no magnitude). The result is repeated to 64 channels and
  compared with the stem output through VGG16 (see ``stage2_fusion.losses.PerceptualEdgeLoss``).
  MSO chooses the operator by editing this file ("Select eage extracting method in PEF.py",
  its README), and the file is a trap: its Prewitt kernels (lines 22-25) are assigned to the
  *Sobel* variable names ``sobel_kernel_h/v/l/r`` right after the Sobel ones (lines 18-21),
  so uncommenting the block (lines 18-36) as a whole runs Prewitt. Our ``"sobel"`` is the
  Sobel kernels of lines 18-21 (the [1, 2, 1]-weighted ones), our ``"prewitt"`` those of
  lines 22-25: the README reports Sobel and Prewitt with different figures (56.30 vs 55.25
  Rank-1), so its Sobel run cannot have been the whole block, which is Prewitt.
  benchmarks/fidelity.py ``--edge sobel`` makes that edit (lines 18-21 without 22-25) in
  memory and compares the two.
* ``train.py`` ``transform_train_gray`` and ``data_utils.py`` ``SYSUData.__getitem__``: the
  edge input is ``Grayscale(1)`` of the *augmented* image (after Pad(10), RandomCrop,
  HorizontalFlip, the same PIL image the network sees), ``ToTensor``, ``Normalize(0.5, 0.5)``,
  i.e. BT.601 gray in [-1, 1], for visible and infrared images alike.
* ``model.py`` ``embed_net.forward``: edges are computed only when ``modal == 0`` (training);
  at test time (``modal`` 1 or 2) there are no edges and no PEF.

A sum of correlations with the same zero padding is one correlation with the summed kernel,
and a stride-s convolution with padding 1 samples the same-size ("same") zero-padded
response at rows and columns 0, s, 2s, ...; so mode ``"mso"`` applies one summed 3x3 kernel
with ``kornia.filters.filter2d`` (a cross-correlation, like ``torch.nn.functional.conv2d``;
kernel not flipped) and takes ``[..., ::stride, ::stride]``. The tests check this against a
plain ``conv2d(stride=4, padding=1)`` with MSO's separate kernels.

Mode ``"magnitude"`` (ours, not MSO) is the textbook unsigned edge strength with the same
integer kernels' scale, so that both modes give maps of comparable size.

``EdgeEmbedding`` is ours as well: a lighter "fuse" variant that adds an embedded edge map
to the stem output instead of (or besides) comparing them through VGG16.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
from torch import nn

from common.config import Recipe, at_least
from common.data.augment import IMAGENET_MEAN, IMAGENET_STD
from common.data.images import BT601
from common.errors import UserError
from common.weights import Weights, WeightsKind
from stage2_fusion.method_spec import Modifier

OPERATORS = ("laplace", "sobel", "prewitt")
MODES = ("mso", "magnitude")

# MSO's 3x3 kernels, row by row, as cjjjao/DIP_work:PEF.py writes them (weights of a
# cross-correlation: row 0 multiplies the pixel row above the centre). Sobel and Prewitt
# list MSO's four directional kernels in its order: h (horizontal edges), v (vertical
# edges), l and r (the two diagonals). MSO sums their signed responses.
MSO_KERNELS: dict[str, tuple[tuple[tuple[int, int, int], ...], ...]] = {
    "laplace": (
        ((-1, -1, -1), (-1, 8, -1), (-1, -1, -1)),
    ),
    "sobel": (
        ((-1, -2, -1), (0, 0, 0), (1, 2, 1)),
        ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1)),
        ((0, 1, 2), (-1, 0, 1), (-2, -1, 0)),
        ((-2, -1, 0), (-1, 0, 1), (0, 1, 2)),
    ),
    "prewitt": (
        ((-1, -1, -1), (0, 0, 0), (1, 1, 1)),
        ((-1, 0, 1), (-1, 0, 1), (-1, 0, 1)),
        ((0, 1, 1), (-1, 0, 1), (-1, -1, 0)),
        ((-1, -1, 0), (-1, 0, 1), (0, 1, 1)),
    ),
}

# Prewitt x-derivative for the magnitude mode (the y-derivative is its transpose).
_PREWITT_X = ((-1, 0, 1), (-1, 0, 1), (-1, 0, 1))
# Inside the square root of the gradient magnitude, as kornia.filters.sobel's default.
MAGNITUDE_EPS = 1e-6


def summed_mso_kernel(operator: str, device: torch.device | None = None) -> torch.Tensor:
    """The sum of MSO's directional kernels of ``operator``: (1, 3, 3) float32.

    Laplace: its single kernel; Sobel: [[-4, -2, 2], [-4, 0, 4], [-2, 2, 4]];
    Prewitt: [[-3, -1, 1], [-3, 0, 3], [-1, 1, 3]].

    Raises:
        ValueError: unknown operator.
    """
    if operator not in MSO_KERNELS:
        raise ValueError(f"unknown edge operator {operator!r}; expected one of {OPERATORS}")
    kernels = torch.tensor(MSO_KERNELS[operator], dtype=torch.float32, device=device)  # (K, 3, 3)
    return kernels.sum(dim=0, keepdim=True)  # (1, 3, 3)


def edge_map(gray: torch.Tensor, operator: str, mode: str = "mso", stride: int = 4) -> torch.Tensor:
    """Edge map of a grayscale batch, sampled every ``stride`` pixels, in float32, no gradient.

    Args:
        gray: (B, 1, H, W) float, BT.601 gray of the augmented input in [-1, 1]
            (:func:`gray_from_normalized`); any float dtype, on any device.
        operator: ``"laplace"``, ``"sobel"`` or ``"prewitt"``.
        mode:
            ``"mso"``: MSO's operator exactly (cjjjao/DIP_work:PEF.py): the summed signed
            responses of its kernels (:data:`MSO_KERNELS`) with zero padding 1, equal to
            ``conv2d(gray, kernel, stride=stride, padding=1)`` summed over the kernels.
            Signed; a constant image c gives 0 inside and c * (sum of the kernel taps that
            fall inside the image) on the border (Laplace corner: 5c, side: 3c).
            ``"magnitude"`` (ours): unsigned edge strength with replicated borders (so a
            constant image has no border edges):
            sobel: ``kornia.filters.sobel(normalized=False)`` = sqrt(gx^2 + gy^2 + 1e-6)
            with the raw [1, 2, 1] x [-1, 0, 1] kernels (kornia's border is always
            replicated); prewitt: the same with the [1, 1, 1] x [-1, 0, 1] kernels through
            ``kornia.filters.filter2d(border_type="replicate")``; laplace:
            ``|kornia.filters.laplacian(kernel_size=3, border_type="replicate",
            normalized=False)|``, the 8-neighbour stencil [[1, 1, 1], [1, -8, 1], [1, 1, 1]],
            i.e. MSO's Laplace kernel negated, so inside the image it is exactly |MSO's
            Laplace response|; size 3 and no normalisation keep MSO's stencil and its
            integer scale (kornia's ``normalized=True`` would divide by 16).
            Flat regions give sqrt(1e-6) = 1e-3 for sobel/prewitt and 0 for laplace.
        stride: sampling step (MSO: 4, the stem's downsampling, so 288 x 144 -> 72 x 36).

    Returns:
        (B, 1, floor((H - 1) / stride) + 1, floor((W - 1) / stride) + 1) float32 on the
        input's device, computed with autocast disabled and under ``torch.no_grad``
        (``requires_grad`` False). Values on a [-1, 1] input: mso mode signed, at most the
        sum of |summed kernel taps| (Laplace 16, Sobel 24, Prewitt 16); magnitude mode >= 0.

    Raises:
        ValueError: unknown operator or mode, ``gray`` not (B, 1, H, W), stride < 1.
        TypeError: ``gray`` not a floating-point tensor or stride not an int.
    """
    if operator not in OPERATORS:
        raise ValueError(f"unknown edge operator {operator!r}; expected one of {OPERATORS}")
    if mode not in MODES:
        raise ValueError(f"unknown edge mode {mode!r}; expected one of {MODES}")
    if not isinstance(gray, torch.Tensor) or not gray.is_floating_point():
        raise TypeError(f"edge_map expects a floating-point tensor, got {getattr(gray, 'dtype', type(gray))}")
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"edge_map expects a (B, 1, H, W) grayscale batch, got {tuple(gray.shape)}")
    if isinstance(stride, bool) or not isinstance(stride, int):
        raise TypeError(f"stride must be an int, got {type(stride).__name__}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    with torch.no_grad(), torch.autocast(device_type=gray.device.type, enabled=False):
        x = gray.detach().float()  # (B, 1, H, W) float32
        if mode == "mso":
            kernel = summed_mso_kernel(operator, x.device)  # (1, 3, 3)
            full = kornia.filters.filter2d(x, kernel, border_type="constant", normalized=False, padding="same", behaviour="corr")
        elif operator == "sobel":
            full = kornia.filters.sobel(x, normalized=False, eps=MAGNITUDE_EPS)
        elif operator == "prewitt":
            kx = torch.tensor([_PREWITT_X], dtype=torch.float32, device=x.device)  # (1, 3, 3)
            gx = kornia.filters.filter2d(x, kx, border_type="replicate", normalized=False)
            gy = kornia.filters.filter2d(x, kx.transpose(1, 2), border_type="replicate", normalized=False)
            full = torch.sqrt(gx * gx + gy * gy + MAGNITUDE_EPS)
        else:  # laplace
            full = kornia.filters.laplacian(x, 3, border_type="replicate", normalized=False).abs()
        # (B, 1, H, W) -> (B, 1, floor((H-1)/s)+1, floor((W-1)/s)+1): the centres conv2d(stride=s, padding=1) visits
        return full[..., ::stride, ::stride].contiguous()


def gray_from_normalized(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> BT.601 grayscale in [-1, 1], MSO's edge input.

    Undoes ``(x - mean) / std`` with :data:`common.data.augment.IMAGENET_MEAN` / ``IMAGENET_STD``,
    takes 0.299 R + 0.587 G + 0.114 B and maps [0, 1] to [-1, 1] (``* 2 - 1``): what
    cjjjao/DIP_work:train.py feeds its edge operator (``Grayscale(1)`` of the augmented PIL
    image, ``ToTensor``, ``Normalize([0.5], [0.5])``). Differences from MSO: PIL rounds the
    gray level to an integer (up to 0.5/255 away, about 0.004 after scaling); regions our
    augmentation erases after normalisation (value 0 = the ImageNet mean colour) come out as
    gray 0.459 * 2 - 1 = -0.082 (MSO does not erase). Infrared images (three equal channels)
    give their own intensity, as in MSO.

    Args:
        x: (B, 3, H, W) float, ImageNet-normalised RGB (or 3-channel infrared).

    Returns:
        (B, 1, H, W) float32 in [-1, 1] (up to float rounding), on x's device.

    Raises:
        ValueError: if x is not (B, 3, H, W). TypeError: if x is not floating point.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"gray_from_normalized expects a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"gray_from_normalized expects (B, 3, H, W), got {tuple(x.shape)}")
    x = x.float()
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    weights = x.new_tensor(BT601).view(1, 3, 1, 1)
    rgb = x * std + mean  # (B, 3, H, W) in [0, 1]
    gray = (rgb * weights).sum(dim=1, keepdim=True)  # (B, 1, H, W) in [0, 1]
    return gray * 2.0 - 1.0


class EdgeEmbedding(nn.Module):
    """Edge map fused into the stem output (ours, not MSO: MSO uses edges only in its PEF loss).

    out = stem + BN(conv3x3(edge)), with a bias-free 3x3 convolution 1 -> C (padding 1) and a
    BatchNorm2d whose scale and shift start at zero, so the block starts as the identity
    on ``stem`` (as AGW's non-local blocks) and learns how much edge information to add.

    Args:
        channels: C, the stem's output channels (64 for ResNet-50).

    Shapes:
        ``forward(stem, edge)``: stem (B, C, h, w) float, edge (B, 1, h, w) float (e.g.
        :func:`edge_map` with stride 4 of a 4x-downsampling stem) -> (B, C, h, w) in stem's
        dtype (or the autocast dtype).

    Raises:
        ValueError: if the shapes do not match as above.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, stem: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        if stem.ndim != 4 or edge.ndim != 4 or edge.shape[1] != 1:
            raise ValueError(f"EdgeEmbedding expects stem (B, C, h, w) and edge (B, 1, h, w), got {tuple(stem.shape)} and {tuple(edge.shape)}")
        if stem.shape[1] != self.conv.out_channels or edge.shape[0] != stem.shape[0] or edge.shape[2:] != stem.shape[2:]:
            raise ValueError(
                f"EdgeEmbedding({self.conv.out_channels}): stem {tuple(stem.shape)} and edge {tuple(edge.shape)} "
                "must share batch and (h, w), with C channels in stem"
            )
        embedded = self.bn(self.conv(edge.to(self.conv.weight.dtype)))  # (B, 1, h, w) -> (B, C, h, w)
        return stem + embedded


EDGE_LOSSES = ("pef", "fuse")


class EdgeBranch(nn.Module):
    """Edge features at a backbone's stems, as a ``stem_hook``: MSO's PEF or our fusion.

    Called with a stem output and the inputs that produced it, it computes the edge map of
    those (augmented, ImageNet-normalised) inputs (:func:`gray_from_normalized`,
    :func:`edge_map` with stride 4, the stems' downsampling) and then, as ``loss`` says:

    * ``"pef"`` (MSO, cjjjao/DIP_work:model.py ``embed_net.forward``): the stem output is
      unchanged; in training, MSO's PEF loss between the stem output and the edge map
      (:class:`stage2_fusion.losses.PerceptualEdgeLoss`, VGG16 inside the model) is added to
      ``aux["pef"]``; at test time nothing is computed (MSO has no edges at test);
    * ``"fuse"`` (ours): the edge map, embedded (:class:`EdgeEmbedding`), is added to the
      stem output, in training and at test time.

    Args:
        operator, mode: see :func:`edge_map`.
        loss: ``"pef"`` or ``"fuse"``.
        channels: the stem's output channels (64 for ResNet-50).
        vgg16: local path of a torchvision-layout VGG16 (``vgg16-397923af.pth`` or the demo stand-in) for PEF, or "" / "none" for a
            randomly initialised VGG16 (not MSO's setting; the training start says so).
        pef_stages: MSO's 4 VGG16 stages, or fewer for small stem maps.

    Shapes:
        ``forward(stem (B, C, H/4, W/4), inputs {name: (B_i, 3, H, W)}, aux dict)`` -> stem
        (B, C, H/4, W/4); ``aux["pef"]`` collects one scalar per call (the per-modality
        networks of TSME's paper layout call it once per modality).

    Raises:
        ValueError: unknown operator, mode or loss.
    """

    def __init__(self, operator: str, mode: str, loss: str, channels: int, vgg16: str = "", pef_stages: int = 4) -> None:
        super().__init__()
        if operator not in OPERATORS or mode not in MODES or loss not in EDGE_LOSSES:
            raise ValueError(f"edge operator/mode/loss must be in {OPERATORS}/{MODES}/{EDGE_LOSSES}, got {operator}/{mode}/{loss}")
        self.operator, self.mode, self.loss = operator, mode, loss
        if loss == "pef":
            from stage2_fusion.losses import PerceptualEdgeLoss

            self.pef = PerceptualEdgeLoss(vgg16 or None, width_divisor=64 // channels, num_stages=pef_stages)
        else:
            self.embed = EdgeEmbedding(channels)

    def forward(self, stem: torch.Tensor, inputs: dict[str, torch.Tensor], aux: dict[str, list]) -> torch.Tensor:
        if self.loss == "pef" and not self.training:
            return stem  # MSO: no edges at test time
        gray = gray_from_normalized(torch.cat(list(inputs.values()), dim=0))  # (B, 1, H, W) in [-1, 1]
        edge = edge_map(gray, self.operator, self.mode, stride=4)  # (B, 1, H/4, W/4) float32, no gradient
        if self.loss == "fuse":
            return self.embed(stem, edge)
        aux.setdefault("pef", []).append(self.pef(stem, edge))
        return stem


@dataclass(frozen=True)
class EdgeRecipe(Recipe):
    """The recipe keys of MSO's edge features, for every method that offers them at its
    stems (AGW, MSO, TSME's real stream: their recipes extend this one).

    Attributes:
        edge: the edge operator, "none", "laplace", "sobel" or "prewitt" (MSO PEF.py; which
            kernels: the module docstring).
        edge_mode: "mso" (its signed, summed kernels) or "magnitude" (ours: the edge strength).
        edge_loss: "pef" (MSO's perceptual edge loss through VGG16, ``fusion.vgg16``) or
            "fuse" (ours: the embedded edge map added to the stem output).
        pef_weight: weight of the PEF term (MSO train.py: 1).
        pef_stages: VGG16 stages PEF chains (MSO PEF.py: 4, features[5:31]; fewer for small inputs).
    """

    edge: str
    edge_mode: str
    edge_loss: str
    pef_weight: float = at_least(0)
    pef_stages: int

    def check(self, where: str) -> None:
        super().check(where)
        if self.edge not in ("none", *OPERATORS):
            raise UserError(f"{where}.edge '{self.edge}' is unknown; use none, laplace, sobel or prewitt")
        if self.edge_mode not in MODES or self.edge_loss not in ("pef", "fuse"):
            raise UserError(f"{where}: edge_mode '{self.edge_mode}' / edge_loss '{self.edge_loss}' unknown; use mso | magnitude and pef | fuse")
        if not 1 <= self.pef_stages <= 4:
            raise UserError(f"{where}.pef_stages {self.pef_stages}: MSO chains 1..4 VGG16 stages")


#: Ablation modifiers of every method whose recipe has the edge options (``mso-sobel``, ``agw-laplace-fuse``).
EDGE_MODIFIERS: tuple[Modifier, ...] = (
    *(Modifier(op, f"edge operator {op} at the stems (MSO PEF.py's kernels)", recipe={"edge": op}) for op in OPERATORS),
    Modifier("magnitude", "ours: kornia's unsigned edge magnitude instead of MSO's signed summed kernels", recipe={"edge_mode": "magnitude"}),
    Modifier("fuse", "ours: the embedded edge map added to the stem output instead of PEF", recipe={"edge_loss": "fuse"}),
)


def uses_pef(recipe: Recipe | None) -> bool:
    """Whether a recipe trains with MSO's PEF loss (an edge operator with ``edge_loss = "pef"``),
    which compares VGG16 features (``fusion.vgg16``)."""
    return isinstance(recipe, EdgeRecipe) and recipe.edge != "none" and recipe.edge_loss == "pef"


def edge_summary(recipe: Recipe | None, vgg16: str) -> dict[str, str]:
    """What a run's results record of its edge features: operator, mode, loss (and VGG16 for PEF)."""
    if not isinstance(recipe, EdgeRecipe) or recipe.edge == "none":
        return {"operator": "none"}
    weights = "random initialisation" if Weights(vgg16).kind is WeightsKind.NONE else str(vgg16)
    return {"operator": recipe.edge, "mode": recipe.edge_mode, "loss": recipe.edge_loss,
            **({"vgg16": weights} if recipe.edge_loss == "pef" else {})}


def build_edge_branch(recipe: Recipe | None, channels: int, vgg16: str = "") -> EdgeBranch | None:
    """The edge branch a recipe asks for (an :class:`EdgeRecipe` with ``edge`` != "none"), or None.

    Args:
        recipe: the method's recipe (``edge``, ``edge_mode``, ``edge_loss``, ``pef_stages``);
            None or a recipe without edge options gives None.
        channels: the stem's output channels.
        vgg16: ``fusion.vgg16``.
    """
    if not isinstance(recipe, EdgeRecipe) or recipe.edge == "none":
        return None
    return EdgeBranch(recipe.edge, recipe.edge_mode, recipe.edge_loss, channels, vgg16, recipe.pef_stages)
