"""Fidelity to the original code: our networks and losses against the authors' released code.

For one method, this script imports the model and loss code of the method's reference
repository from a checkout (``--reference DIR``) at run time, builds both networks, gives
them identical random weights and compares what they compute:

1. the test-time feature each side's test script uses (eval mode, both modalities);
2. every tensor that enters a loss, each loss term and the total (train mode, same seed);
3. the gradient of every parameter after one backward pass of the total loss.

| method  | reference repository (``--reference DIR`` = a checkout of it)                       | commit  |
|---------|--------------------------------------------------------------------------------------|---------|
| agw     | mangye16/Cross-Modal-Re-ID-baseline                                                  | e817a26 |
| tsme    | jnLreID/Revisiting-Modality-specific-Feature-Compensation-for-Visible-Infrared-Person-Re-Identification | 99bc54c (the last one with model.py) |
| mso     | cjjjao/DIP_work                                                                      | 5d51515 |
| mscmnet | Hua-XC/MSCMNet                                                                       | 5b5f874 |
| glmn    | cq0907/GFMNet                                                                        | 1746937 |

The checkout must hold the files we import exactly as at that commit (their git blob ids
are checked, so a plain copy works as well as a clone; later commits of AGW, MSO and MSCMNet
changed only their READMEs). Nothing is copied from it into this repository and nothing is
written into it (no bytecode either). What stops the released code on a CPU without the
internet is neutralised in memory, and every such patch is listed in the output:
``pretrained=True`` downloads (every weight is randomised anyway), ``.cuda()`` calls,
imports of modules that are missing or only used for debugging and pictures (``IPython``,
``cv2``, TSME's deleted ``model.s1model``), and code writing to hard-coded paths.

Identical weights: every parameter and buffer of the reference network is drawn at random,
including those its code initialises to zero (the non-local blocks' last BN, the BNNeck
bias); the running statistics of the BatchNorm layers its forward uses are then those of a
separate random batch (random statistics on random weights overflow the references' GeM in
eval mode; see :func:`calibrate_bn_`). The reference's state dict is copied into our network
through an explicit key map (``--show-map`` prints it) and loaded with ``strict=True``, so
every tensor of ours comes from the reference. Reference tensors that the key map does not
use are tensors its forward never touches (the unused layers of the ResNets it builds whole,
TSME's unused SE convolutions, MSCMNet's unused resizing convolutions): they are counted,
and must receive no gradient.

Figures: ``feature_max_abs_diff`` (L2-normalised test features), ``loss_max_abs_diff``
(loss terms and total), ``loss_input_max_rel_diff`` (max |ours - ref| of each loss input
over its largest magnitude), ``grad_max_rel_diff`` (per parameter, max |ours - ref| over the
largest |ref| gradient entry among the parameters of its layer, weight and bias together;
the maximum over parameters). Biases whose gradient is zero in exact arithmetic (a bias
followed by the BatchNorm or LayerNorm that removes it) carry float noise only: they are
left out of that figure and checked to stay below 1e-2 of their layer's largest gradient
on both sides. The exit status is 0 when feature and loss differences are within 1e-4,
loss inputs within 1e-4 relative and gradients within 1e-3 relative; 1 otherwise; 2 (one
line, no traceback) when DIR is not the expected repository at the expected commit, or an
option is invalid.

Gradients at a random point are sensitive: a ReLU whose input is within rounding of zero
switches, and the gradients behind it change. The comparison is meaningful because both
forward passes round alike: our non-local block hands its W convolution the same memory
layout as the references do (before it did, MSCMNet's features agreed to 1e-6 and its
gradients differed by up to 6 %, as much as the reference's own gradients move when one of
its weights is changed by 1e-6).

Everything runs in float32 on the CPU (the references train in fp32, except MSCMNet, whose
fp16 autocast is a CUDA setting: the comparison is of the computation, not the precision).
Inputs are random images in [0, 1], ImageNet-normalised, with P identities x K images per
modality in the same identity order in both modalities (the layout every reference's
sampler produces and its losses assume).

MSO chooses its edge operator by editing PEF.py ("Select eage extracting method in
PEF.py", its README); the released file runs Laplace. ``--edge sobel`` and ``--edge
prewitt`` make that edit in memory (listed among the patches) and compare our operator of
the same name.

Usage (from the repository root)::

    python benchmarks/fidelity.py --method agw --reference ../refs/Cross-Modal-Re-ID-baseline
    python benchmarks/fidelity.py --method tsme --reference DIR --json
    python benchmarks/fidelity.py --method mso --reference DIR --edge sobel --show-map
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import json
import re
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# run as a script, compare the code of the checkout this file belongs to (not an installed copy)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from common.data.augment import imagenet_normalize
from common.errors import UserError
from stage2_fusion.edges import gray_from_normalized
from stage2_fusion.methods import build_method, load_config

TOLERANCES = {"feature": 1e-4, "loss": 1e-4, "loss_input": 1e-4, "grad": 1e-3}
GRAD_FLOOR = 1e-12  # denominator floor of every relative difference
ZERO_GRADIENT_TOLERANCE = 1e-2  # a gradient zero in exact arithmetic, relative to its layer's largest

# --------------------------------------------------------------------------- the references


@dataclasses.dataclass(frozen=True)
class Reference:
    """A method's reference repository and the files the harness imports from it.

    Attributes:
        repository: GitHub ``owner/name``.
        commit: the commit whose files are expected (full SHA-1).
        files: path relative to the checkout -> git blob SHA-1 of that file at ``commit``.
        note: why this commit, when it is not simply the newest one.
        missing_hint: said when a file is missing (TSME deleted its model code later).
    """

    repository: str
    commit: str
    files: dict[str, str]
    note: str = ""
    missing_hint: str = ""
    subdir: str = ""  # the folder of the checkout its modules are imported from (CAJ: ICCV21_CAJ)

    @property
    def short(self) -> str:
        return self.commit[:7]


REFERENCES: dict[str, Reference] = {
    "agw": Reference(
        "mangye16/Cross-Modal-Re-ID-baseline", "e817a2672c1e14e8802617acb980a79520ef9545",
        {"model.py": "4284b95f157de7a1700119ba4db70d2708332469", "resnet.py": "551a88a4b2922866055703eb6c8c31816560098e",
         "loss.py": "4943b5f0eb728582ee54d654d6769a95e6c22345"},
        "these files are unchanged since 8c75491 (2020-01-02)"),
    "caj": Reference(
        "mangye16/Cross-Modal-Re-ID-baseline", "e817a2672c1e14e8802617acb980a79520ef9545",
        {"ICCV21_CAJ/model.py": "4284b95f157de7a1700119ba4db70d2708332469", "ICCV21_CAJ/resnet.py": "551a88a4b2922866055703eb6c8c31816560098e",
         "ICCV21_CAJ/loss.py": "fe07b4c655b646c157e3c0db5dee624a7717afc6"},
        "CAJ's code lives in the AGW repository's ICCV21_CAJ/ folder; its model.py is AGW's, byte for byte", subdir="ICCV21_CAJ"),
    "tsme": Reference(
        "jnLreID/Revisiting-Modality-specific-Feature-Compensation-for-Visible-Infrared-Person-Re-Identification",
        "99bc54c205eb232f50ea524cb55a5c66ce89abe0",
        {"model.py": "bb5303e7e9a1dda830b2f358c29b464087cf0355", "heterogeneity_loss.py": "7478759ba46f162ec3513fa070977958ee5f1c51",
         "Transform.py": "a3ed445161f68952dd8ae97f586cb753a0165ae5"},
        "the last commit with model.py", "model.py, train.py and test.py were deleted in the next commits"),
    "mso": Reference(
        "cjjjao/DIP_work", "5d515159d87e4a4a62bc12d08d10859aba3a1fcd",
        {"model.py": "81c7fe172659344885721e5b5d3e50ec6460b25f", "resnet.py": "551a88a4b2922866055703eb6c8c31816560098e",
         "PEF.py": "15ece0e2bf35650df58e0a6ca9987e88c06ed879", "loss.py": "88a0247c36717387720caa25cc664b72deeb334d"},
        "later commits (to ea6da0e) change only README.md"),
    "mscmnet": Reference(
        "Hua-XC/MSCMNet", "5b5f874f8befc98468687440c92e6e8ce28ecd26",
        {"model.py": "697924cd9ab825193c5f0562dc9ce1d3639206c0", "resnet.py": "6800993a6fa2949c4561ed635bcdeb4c3e7a25f1",
         "loss.py": "07513e78be606bb70d3183c49e9f95267f1f7945"},
        "later commits (to 235ae37) change only README.md and logs"),
    "glmn": Reference(
        "cq0907/GFMNet", "174693726267e4e4b82f9c9f69c7c15873fa4d67",
        {"model_test0.py": "9c9f2837348250fc8b7d7c14c1009c219891da07", "resnet.py": "f3e12c2ecd298b0ce6e3ad5a15a1b19cd3e04059",
         "loss.py": "925a2d42ff583cfe0ebca96437a5775d2a61e3d0", "aligned/__init__.py": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
         "aligned/local_dist.py": "63879e267ae8a712eefbd42bebecbe60cd31019c", "re_rank.py": "b83552fe5e902e710ffc3012f59d85a43882b7f9"}),
}

CHECKOUT_NAMES = {method: ref.repository.split("/")[1] for method, ref in REFERENCES.items()}
"""The folder ``git clone`` makes for each reference (what ``VIREID_REFERENCE_DIR`` holds)."""


def git_blob_sha1(path: Path) -> str:
    """The id git gives a file's content: SHA-1 of ``b"blob <size>\\0" + content``."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_reference(method: str, root: Path) -> None:
    """Check that ``root`` holds the files of ``method``'s reference at its commit.

    Raises:
        UserError: (one line, naming the repository, the commit and the fix) when ``root``
            is not a folder, a file is missing or its content differs.
    """
    ref = REFERENCES[method]
    url = f"https://github.com/{ref.repository}"
    checkout = f"git clone {url} && git -C {CHECKOUT_NAMES[method]} checkout {ref.short}"
    if not root.is_dir():
        raise UserError(f"--reference {root} is not a folder; pass a checkout of {ref.repository} at commit {ref.short} ({checkout})")
    for rel, blob in ref.files.items():
        path = root / rel
        if not path.is_file():
            raise UserError(f"--reference {root} is not a checkout of {ref.repository} at commit {ref.short}: {rel} is missing"
                            f"{' (' + ref.missing_hint + ')' if ref.missing_hint else ''}; run: {checkout}")
        if git_blob_sha1(path) != blob:
            raise UserError(f"--reference {root}: {rel} differs from {ref.repository} at commit {ref.short} (git blob "
                            f"{git_blob_sha1(path)[:10]}, expected {blob[:10]}); check out that commit unmodified: {checkout}")


# --------------------------------------------------------------------------- patches and imports


class Patches:
    """In-memory patches of the reference code, each with the reason shown to the user.

    ``setattr`` replaces an attribute until :meth:`undo`; ``note`` records a patch made
    another way (a stub module). Used as a context manager, everything is undone on exit.
    """

    def __init__(self) -> None:
        self.applied: list[str] = []
        self._undo: list[Callable[[], None]] = []

    def note(self, why: str) -> None:
        if why not in self.applied:
            self.applied.append(why)

    def setattr(self, obj: Any, name: str, value: Any, why: str) -> None:
        old = getattr(obj, name)
        setattr(obj, name, value)
        self._undo.append(lambda: setattr(obj, name, old))
        self.note(why)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> Patches:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def _stub_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@contextlib.contextmanager
def reference_imports(root: Path, stubs: dict[str, types.ModuleType]) -> Iterator[Callable[[str], types.ModuleType]]:
    """Import modules from a reference checkout without touching it or our own imports.

    Yields ``load(name)``, which imports ``name`` with ``root`` first on ``sys.path``.
    ``stubs`` stand in for modules while the reference imports (missing or heavy ones).
    Modules of the same top-level name as the checkout's files (``model``, ``loss``,
    ``resnet``...) that were imported before are set aside and restored afterwards, and the
    reference's modules are removed from ``sys.modules`` again (the returned module objects
    stay usable), so several references can be loaded in one process. Bytecode writing is
    off meanwhile, so nothing is written into ``root``.
    """
    tops = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if p.is_dir()} | {n.split(".")[0] for n in stubs}

    def ours(name: str) -> bool:
        return name.split(".")[0] in tops

    saved = {name: sys.modules.pop(name) for name in [n for n in sys.modules if ours(n)]}
    sys.modules.update(stubs)
    sys.path.insert(0, str(root))
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    importlib.invalidate_caches()
    try:
        yield importlib.import_module
    finally:
        sys.dont_write_bytecode = dont_write
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        importlib.invalidate_caches()


def _without_download(build: Callable[..., nn.Module], *, torchvision_api: bool = False) -> Callable[..., nn.Module]:
    """A network constructor that ignores ``pretrained=True`` (no download, random weights)."""

    def constructor(*args: Any, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if torchvision_api:
            kwargs["weights"] = None
            return build(*args, **kwargs)
        return build(*args, pretrained=False, **kwargs)

    return constructor


def patch_resnet_download(patches: Patches, module: types.ModuleType, label: str) -> None:
    """``<label>.resnet50(pretrained=True)`` builds without downloading ImageNet weights."""
    patches.setattr(module, "resnet50", _without_download(module.resnet50),
                    f"{label}: resnet50(pretrained=True) builds without downloading ImageNet weights (every weight is randomised below)")


# --------------------------------------------------------------------------- random weights


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def randomise_(module: nn.Module, generator: torch.Generator) -> None:
    """Draw every parameter and buffer of ``module`` at random, in place.

    Normalisation weights U(0.25, 0.75) (below 1, so that activations and losses stay
    moderate through 16 residual blocks and float32 rounding stays small next to the
    tolerances); other 1-d parameters (biases) N(0, 0.1^2);
    weights N(0, 2 / fan_in) (He); BatchNorm ``running_mean`` N(0, 0.1^2), ``running_var``
    U(0.5, 2), ``num_batches_tracked`` an integer in 1..1000; other float buffers N(0, 1).
    Zero-initialised tensors (non-local BN, BNNeck bias) become non-zero, so that a
    mapping error cannot hide behind a zero.
    """
    norm_weights = {id(m.weight) for m in module.modules() if isinstance(m, _NORMS) and m.weight is not None}
    with torch.no_grad():
        for _, p in module.named_parameters():
            if id(p) in norm_weights:
                p.copy_(torch.rand(p.shape, generator=generator) * 0.5 + 0.25)
            elif p.ndim <= 1:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
        for name, b in module.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked" or not b.is_floating_point():
                b.copy_(torch.randint(1, 1001, b.shape, generator=generator))
            elif leaf == "running_var":
                b.copy_(torch.rand(b.shape, generator=generator) * 1.5 + 0.5)
            elif leaf == "running_mean":
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
            else:
                b.copy_(torch.randn(b.shape, generator=generator))


def calibrate_bn_(module: nn.Module, forward: Callable[[], Any], generator: torch.Generator) -> None:
    """Give the BatchNorm layers a forward pass uses running statistics of the right scale.

    Random running statistics on random weights let eval-mode activations grow without
    bound through 16 residual blocks and the non-local blocks (whose input is not
    normalised), until the references' GeM overflows. So ``forward()``, which must run the
    module in train mode on a batch of its own (other random images than the compared
    ones), is run once with momentum 1: the running statistics become that batch's. Eval
    mode then keeps the activations at train mode's scale, and its statistics still differ
    from those of the compared batch (so a network normalising with batch statistics at
    test time would show). ``num_batches_tracked`` is drawn again; BatchNorm layers the
    forward does not use keep what :func:`randomise_` drew; parameters are not touched.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = module.training
    module.train()
    try:
        for m in norms:
            m.momentum = 1.0
        with torch.no_grad():
            forward()
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.train(was_training)
    with torch.no_grad():
        for m in norms:
            m.num_batches_tracked.copy_(torch.randint(1, 1001, (), generator=generator))


# --------------------------------------------------------------------------- key maps

Rule = tuple[str, str]
"""(regular expression matching a whole key of ours, reference key template with ``\\1``...)."""


class KeyMapError(ValueError):
    """A key map that does not cover our state dict exactly (a harness bug, not a user error)."""


def map_keys(rules: list[Rule], our_keys: list[str]) -> dict[str, str]:
    """Our state-dict key -> reference key, by the first rule whose pattern matches it whole.

    Raises:
        KeyMapError: a key no rule matches, or two keys of ours mapped to one reference key.
    """
    compiled = [(re.compile(pattern), template) for pattern, template in rules]
    out: dict[str, str] = {}
    for key in our_keys:
        for pattern, template in compiled:
            match = pattern.fullmatch(key)
            if match:
                out[key] = match.expand(template)
                break
        else:
            raise KeyMapError(f"no key-map rule matches our key '{key}'")
    seen: dict[str, str] = {}
    for ours, ref in out.items():
        if ref in seen:
            raise KeyMapError(f"our keys '{seen[ref]}' and '{ours}' both map to reference key '{ref}'")
        seen[ref] = ours
    return out


def mapped_state(key_map: dict[str, str], ref_state: dict[str, torch.Tensor], our_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict filled from the reference's through ``key_map``.

    Raises:
        KeyMapError: a mapped reference key that does not exist, or a shape mismatch.
    """
    out = {}
    for ours, ref in key_map.items():
        if ref not in ref_state:
            raise KeyMapError(f"our key '{ours}' maps to '{ref}', which the reference state dict does not have")
        if ref_state[ref].shape != our_state[ours].shape:
            raise KeyMapError(f"'{ours}' {tuple(our_state[ours].shape)} and reference '{ref}' {tuple(ref_state[ref].shape)} differ in shape")
        out[ours] = ref_state[ref].detach().clone()
    return out


def nonlocal_rules(ours: str, ref: str) -> list[Rule]:
    """Our ``NonLocalBlock`` s under ``ours<stage>.<j>`` -> the references' ``Non_local`` s
    ``<ref><stage>.<j>``, whose ``g`` is wrapped in a Sequential."""
    o = re.escape(ours)
    return [(o + r"([1-4])\.(\d+)\.g\.(weight|bias)", ref + r"\1.\2.g.0.\3"),
            (o + r"([1-4])\.(\d+)\.(theta|phi|W)\.(.+)", ref + r"\1.\2.\3.\4")]


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Batch:
    """Random inputs shared by both sides.

    ``images01[v]`` are (n, 3, H, W) float [0, 1] images for view ``v`` ("vis", "ir" and
    the method's extra views: generated partners, augmented copies); ``x[v]`` their
    ImageNet-normalised versions; ``labels_vis`` (n,) int64 (P identities x K), the same
    for infrared; ``labels`` (2n,) = [labels_vis; labels_vis]; ``is_ir`` (2n,) bool.
    """

    images01: dict[str, torch.Tensor]
    x: dict[str, torch.Tensor]
    labels_vis: torch.Tensor
    labels: torch.Tensor
    is_ir: torch.Tensor
    num_classes: int


def make_batch(views: tuple[str, ...], size: tuple[int, int], ids: int, per_id: int, generator: torch.Generator) -> Batch:
    """``ids`` identities x ``per_id`` images per modality, random images for every view."""
    n = ids * per_id
    num_classes = ids + 2
    pids = torch.randperm(num_classes, generator=generator)[:ids]
    labels_vis = pids.repeat_interleave(per_id)  # (n,): contiguous identity blocks, as the references' samplers
    images01 = {v: torch.rand(n, 3, *size, generator=generator) for v in views}
    return Batch(images01, {v: imagenet_normalize(t) for v, t in images01.items()}, labels_vis,
                 torch.cat([labels_vis, labels_vis]), torch.arange(2 * n) >= n, num_classes)


# --------------------------------------------------------------------------- per method


Tensors = dict[str, torch.Tensor]


class MethodAdapter:
    """How one method is built and run on both sides. Subclasses fill in the details.

    Attributes:
        method: our method name.
        size: default input (H, W), the paper's or a smaller one both codes allow.
        ids, per_id: default batch, identities x images per modality.
        views: the image views the batch needs.
        compared: one line per compared quantity and how its forms differ (printed).
        zero_gradient: patterns of our parameters whose gradient is zero in exact
            arithmetic in train mode (a bias followed by a normalisation that removes it: the
            non-local blocks' W convolution before its BatchNorm, a linear layer before
            BatchNorm1d, MSCMNet's token convolutions before their LayerNorm). Their computed
            gradients are float noise; they are checked to be negligible next to the other
            gradients of their layer instead of compared with each other.
    """

    method = ""
    size: tuple[int, int] = (128, 64)
    ids, per_id = 3, 2
    views: tuple[str, ...] = ("vis", "ir")
    compared: tuple[str, ...] = ()
    zero_gradient: tuple[str, ...] = (r".*nonlocal_layer\d\.\d+\.W\.0\.bias",)

    def check_size(self, size: tuple[int, int]) -> None:
        """Raises UserError when the reference cannot run at ``size``."""
        if size[0] % 16 or size[1] % 16:
            raise UserError(f"--size {size[0]}x{size[1]}: both sides downsample by 16; pass multiples of 16 (default {self.size[0]}x{self.size[1]})")

    def stubs(self, patches: Patches) -> dict[str, types.ModuleType]:
        return {}

    def load(self, load: Callable[[str], types.ModuleType], patches: Patches) -> dict[str, types.ModuleType]:
        raise NotImplementedError

    def build_reference(self, mods: dict[str, types.ModuleType], num_classes: int, patches: Patches) -> nn.Module:
        raise NotImplementedError

    def overrides(self, size: tuple[int, int]) -> dict[str, Any]:
        """Config overrides of the paper profile for our network."""
        return {"data": {"height": size[0], "width": size[1]}, "fusion": {"backbone": {"pretrained": "none"}}}

    def build_ours(self, size: tuple[int, int], num_classes: int) -> tuple[nn.Module, Callable, Any]:
        """Our network, its loss function and recipe (paper profile with :meth:`overrides`)."""
        return build_ours(self.method, self.overrides(size), num_classes)

    def rules(self) -> list[Rule]:
        """The key map: (pattern of our key, reference key template), first match wins."""
        raise NotImplementedError

    def reference_features(self, ref: nn.Module, b: Batch) -> Tensors:
        raise NotImplementedError

    def our_features(self, model: nn.Module, b: Batch) -> Tensors:
        raise NotImplementedError

    def reference_train(self, ref: nn.Module, mods: dict[str, types.ModuleType], b: Batch) -> tuple[Tensors, Tensors]:
        """(tensors entering the losses, losses with "total") of the reference."""
        raise NotImplementedError

    def our_train(self, model: nn.Module, loss_fn: Callable, recipe: Any, b: Batch) -> tuple[Tensors, Tensors]:
        raise NotImplementedError


def _agw_family_features(ref_call: Callable[[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], model: nn.Module | None,
                         b: Batch) -> Tensors:
    """{'<modality> pool', '<modality> fc'}: the pre-BN and post-BN L2-normalised features."""
    out = {}
    for m in ("vis", "ir"):
        if model is None:
            pool, fc = ref_call(m, b.x[m])
        else:
            pool, fc = model.extract({m: b.x[m]}, None, "pre"), model.extract({m: b.x[m]}, None, "post")
        out[f"{m} pool (pre-BN)"], out[f"{m} fc (post-BN)"] = pool, fc
    return out


class AGWAdapter(MethodAdapter):
    """AGW (stage2_fusion/methods/agw.py ``AGWNet`` + ``agw_loss``) vs model.py ``embed_net``, loss.py, train.py."""

    method = "agw"
    compared = (
        "test features: model.py embed_net(modal=1|2) eval outputs l2norm(x_pool), l2norm(feat) = our extract('pre'|'post')",
        "losses: train.py's CrossEntropyLoss(out0, labels) + TripletLoss_WRT(feat, labels), as its train() adds them",
    )

    def load(self, load, patches):
        mods = {"model": load("model"), "loss": load("loss")}
        patch_resnet_download(patches, mods["model"], "model.py")
        return mods

    def build_reference(self, mods, num_classes, patches):
        return mods["model"].embed_net(num_classes, no_local="on", gm_pool="on")

    def rules(self):
        return [
            (r"backbone\.stems\.vis\.(.+)", r"visible_module.visible.\1"),
            (r"backbone\.stems\.ir\.(.+)", r"thermal_module.thermal.\1"),
            (r"backbone\.(layer[1-4]\..+)", r"base_resnet.base.\1"),
            *nonlocal_rules("backbone.nonlocal_layer", "NL_"),
            (r"bnneck\.bn\.(.+)", r"bottleneck.\1"),
            (r"bnneck\.classifier\.weight", r"classifier.weight"),
        ]

    def reference_features(self, ref, b):
        return _agw_family_features(lambda m, x: ref(x, x, modal=1 if m == "vis" else 2), None, b)

    def our_features(self, model, b):
        return _agw_family_features(None, model, b)

    def reference_train(self, ref, mods, b):
        feat, logits = ref(b.x["vis"], b.x["ir"])
        loss_id = nn.CrossEntropyLoss()(logits, b.labels)
        loss_tri, _ = mods["loss"].TripletLoss_WRT()(feat, b.labels)
        return {"feat_pre_bn": feat, "logits": logits}, {"id": loss_id, "wrt": loss_tri, "total": loss_id + loss_tri}

    def our_train(self, model, loss_fn, recipe, b):
        out = model({"vis": b.x["vis"], "ir": b.x["ir"]})
        losses = loss_fn(out, b.labels, b.is_ir, recipe)
        return {k: out[k] for k in ("feat_pre_bn", "logits")}, {k: losses[k] for k in ("id", "wrt", "total")}


# MSO chooses its edge operator by editing PEF.py (PEF_Loss.forward): lines 18-36 are a
# commented-out string holding the Sobel kernels (18-21), then Prewitt kernels under the
# same variable names (22-25), then the four convolutions summed (26-36); lines 37-39 run
# the Laplace kernel. operator -> (patch description, 1-based lines to comment out).
PEF_EDITS = {
    "sobel": ("PEF.py edited in memory to run Sobel, as its README has users choose the operator ('Select eage extracting method in PEF.py'): lines 18-36 "
              "uncommented except the Prewitt kernels 22-25 (they reuse the Sobel names and would overwrite them), "
              "the Laplace lines 37-39 commented out", (22, 23, 24, 25, 37, 38, 39)),
    "prewitt": ("PEF.py edited in memory to run Prewitt: lines 18-36 uncommented as a whole (its Prewitt kernels 22-25 "
                "overwrite the Sobel ones of 18-21), the Laplace lines 37-39 commented out", (37, 38, 39)),
}


def pef_with_operator(pef: types.ModuleType, operator: str) -> types.ModuleType:
    """A copy of MSO's PEF module, compiled from its source with the operator chosen by the
    edit its README asks users to make (see :data:`PEF_EDITS`); the file is not changed.

    Raises:
        ValueError: an unknown operator, or a source that is not the checked PEF.py.
    """
    if operator not in PEF_EDITS:
        raise ValueError(f"PEF.py offers laplace, sobel or prewitt, not {operator!r}")
    path = Path(pef.__file__)
    lines = path.read_text(encoding="utf-8").splitlines()
    quotes = "'" * 3
    if not (lines[17].lstrip().startswith(quotes + "sobel_kernel_h") and lines[35].rstrip().endswith(".cuda()" + quotes)
            and lines[36].lstrip().startswith("laps_kernel")):
        raise ValueError(f"{path} is not the PEF.py this edit was written for")
    lines[17] = lines[17].replace(quotes, "", 1)  # the string opening before the Sobel kernels
    lines[35] = lines[35].rstrip()[: -len(quotes)]  # ... and its end after the summed responses
    for number in PEF_EDITS[operator][1]:
        lines[number - 1] = re.sub(r"^(\s*)", r"\1# ", lines[number - 1], count=1)
    module = types.ModuleType(f"PEF_{operator}")
    module.__file__ = str(path)
    exec(compile("\n".join(lines) + "\n", f"{path} ({operator}, edited in memory)", "exec"), module.__dict__)
    return module


class MSOAdapter(AGWAdapter):
    """MSO (``MSONet``, PEF and CMCC) vs DIP_work model.py ``embed_net`` (with PEF.py inside), loss.py, train.py."""

    method = "mso"
    compared = (
        "test features: model.py embed_net(modal=1|2) eval outputs l2norm(x_pool), l2norm(feat) = our extract('pre'|'post')",
        "losses: train.py's CrossEntropyLoss + TripletLoss_WRT(feat) + CMCC(feat_bn) + PEF (returned by the model), all weight 1",
        "edge operator: PEF.py's (as released: Laplace; --edge sobel|prewitt: its commented kernels, see the patches) = our "
        "--edge of the same name, mode 'mso'; edge input: the BT.601 gray in [-1, 1] our model computes from the normalised "
        "images, given to both sides (its data_utils.py makes it with PIL, rounded to uint8 levels)",
    )

    def check_size(self, size):
        super().check_size(size)
        if size[0] < 64 or size[1] < 64:
            raise UserError(f"--size {size[0]}x{size[1]}: MSO's PEF pools the stem map 4 times; pass at least 64x64 (default 128x64)")

    def stubs(self, patches):
        patches.note("cv2 (OpenCV) replaced by an empty module: model.py and PEF.py use it only to write heat-map pictures")
        return {"cv2": _stub_module("cv2")}

    edge = "laplace"  # the operator PEF.py runs as released; "sobel" / "prewitt" edit it in memory

    def load(self, load, patches):
        mods = {"model": load("model"), "loss": load("loss"), "PEF": load("PEF")}
        patch_resnet_download(patches, mods["model"], "model.py")
        if self.edge != "laplace":
            mods["PEF"] = pef_with_operator(mods["PEF"], self.edge)
            patches.setattr(mods["model"], "PEF_Loss", mods["PEF"].PEF_Loss, PEF_EDITS[self.edge][0])
        patches.setattr(mods["PEF"].models, "vgg16", _without_download(mods["PEF"].models.vgg16, torchvision_api=True),
                        "PEF.py: models.vgg16(pretrained=True) builds without downloading ImageNet weights (randomised below)")
        patches.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self,
                        "PEF.py: edge_detect.cuda() returns the tensor itself (the comparison runs on the CPU)")
        return mods

    def build_reference(self, mods, num_classes, patches):
        ref = mods["model"].embed_net(num_classes, no_local="on", gm_pool="on")
        ref.visualize = lambda *args: None
        patches.note("model.py: embed_net.visualize (writes ./heatmap/<i>/*.jpg, assumes batch >= 61 at 288x144) does nothing")
        return ref

    def overrides(self, size):
        o = super().overrides(size)
        o["fusion"]["vgg16"] = "none"  # the weights come from the reference
        o["fusion"]["recipes"] = {"mso": {"edge": self.edge, "edge_mode": "mso", "edge_loss": "pef", "pef_stages": 4}}
        return o

    def rules(self):
        return [*super().rules(), (r"edges\.pef\.stages\.\d\.(\d+)\.(weight|bias)", r"PEF.model.features.\1.\2")]

    def reference_train(self, ref, mods, b):
        # the edge input our model computes internally, so that both sides see the same one
        g_vis, g_ir = gray_from_normalized(b.x["vis"]), gray_from_normalized(b.x["ir"])
        feat, feat_bn, logits, loss_pef = ref(b.x["vis"], b.x["ir"], modal=0, x1_g=g_vis, x2_g=g_ir)
        loss_id = nn.CrossEntropyLoss()(logits, b.labels)
        loss_tri, _ = mods["loss"].TripletLoss_WRT()(feat, b.labels)
        loss_cmcc = mods["loss"].CMCC()(feat_bn, b.labels)
        losses = {"id": loss_id, "wrt": loss_tri, "cmcc": loss_cmcc, "pef": loss_pef, "total": loss_id + loss_tri + loss_cmcc + loss_pef}
        return {"feat_pre_bn": feat, "feat_post_bn": feat_bn, "logits": logits}, losses

    def our_train(self, model, loss_fn, recipe, b):
        out = model({"vis": b.x["vis"], "ir": b.x["ir"]})
        losses = loss_fn(out, b.labels, b.is_ir, recipe)
        return ({k: out[k] for k in ("feat_pre_bn", "feat_post_bn", "logits")},
                {k: losses[k] for k in ("id", "wrt", "cmcc", "pef", "total")})


class _PartnerAsInput(nn.Module):
    """Stands in for TSME's stage-1 generator in its stage-2 network: returns its input.

    Both sides then receive the same generated partners as inputs (our partner cache supplies
    them; stage 1 is a separate network with its own tests).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def loadlayer(self, path: str) -> None:
        """TSME's loader of a generator file (hard-coded names): nothing to load."""


class TSMEAdapter(MethodAdapter):
    """TSME (``TSMENet`` in the paper layout + ``tsme_loss``) vs model.py ``embed_net``, heterogeneity_loss.py, train.py."""

    method = "tsme"
    zero_gradient = (r".*_heads\.heads\.\d\.feature\.0\.bias",)  # Linear before BatchNorm1d
    size = (192, 96)  # layer4 12 x 6: 6 stripes of 2 rows, 2 IAI stripes of 6 rows
    views = ("vis", "ir", "partner_vis", "partner_ir")
    compared = (
        "test features: model.py embed_net(modal=1|2) eval outputs (6 pooled stripes, 6 BN embeddings), each part "
        "l2-normalised and concatenated; ours also divides the concatenation by its norm (sqrt(6)), so the reference's "
        "descriptor is compared after that same division (ranking unchanged)",
        "losses: train.py's sum over the 10 heads of CrossEntropyLoss + 0.5 * hetero_loss(margin 0, 'l2') on the l2-normalised "
        "embeddings; heads 9-10 list generated-visible (from infrared) rows first, ours generated-from-visible first: "
        "their rows are compared with the halves swapped",
        "generators: stage 2 receives the generated partners as inputs on both sides (the generators are stage 1)",
    )

    def check_size(self, size):
        super().check_size(size)
        if (size[0] // 16) % 6:
            raise UserError(f"--size {size[0]}x{size[1]}: TSME's 6 stripes need H / 16 divisible by 6 (96, 192, 288...; default 192x96)")

    def stubs(self, patches):
        patches.note("model.s1model (imported by model.py, missing from the repository): Generatorfeature is an identity "
                     "whose loadlayer() loads nothing; the generated partners are inputs")
        return {"model.s1model": _stub_module("model.s1model", Generatorfeature=_PartnerAsInput)}

    def load(self, load, patches):
        mods = {"model": load("model"), "heterogeneity_loss": load("heterogeneity_loss")}
        models = mods["model"].models  # torchvision.models as model.py imported it
        patches.setattr(models, "resnet50", _without_download(models.resnet50, torchvision_api=True),
                        "model.py: torchvision models.resnet50(pretrained=True) builds without downloading ImageNet weights")
        return mods

    def build_reference(self, mods, num_classes, patches):
        return mods["model"].embed_net(512, num_classes, drop=0.0, arch="resnet50")  # train.py: --low-dim 512, --drop 0.0

    def overrides(self, size):
        o = super().overrides(size)
        o["fusion"].setdefault("recipes", {})["tsme"] = {"streams": "paper", "gate": True, "iai": True, "embed_dim": 512, "num_stripes": 6,
                                                         "num_aux_stripes": 2}
        return o

    def rules(self):
        rules = []
        for ours, ref in (("real.nets.vis.", "visible_net.visible."), ("real.nets.ir.", "thermal_net.thermal."),
                          ("generated.nets.vis.", "visible_net.visible2."), ("generated.nets.ir.", "thermal_net.thermal2.")):
            name = ours.split(".")[2]
            rules.append((re.escape(ours) + rf"stems\.{name}\.(conv1|bn1)\.(.+)", ref + r"\1.\2"))
            rules.append((re.escape(ours) + r"(layer[1-4]\..+)", ref + r"\1"))
        for group, first in (("fused_heads", 1), ("real_heads", 7), ("generated_heads", 9)):
            for i in range(6 if group == "fused_heads" else 2):
                rules.append((rf"{group}\.heads\.{i}\.feature\.([01])\.(.+)", rf"feature{first + i}.feat_block.\1.\2"))
                rules.append((rf"{group}\.heads\.{i}\.classifier\.1\.(.+)", rf"classifier{first + i}.classifier.1.\1"))
        return rules

    def reference_features(self, ref, b):
        out = {}
        for m, modal in (("vis", 1), ("ir", 2)):
            pool, emb = ref(b.x[m], b.x[m], b.x[f"partner_{m}"], b.x[f"partner_{m}"], modal=modal)
            out[f"{m} pool (6 stripes)"], out[f"{m} fc (6 embeddings)"] = F.normalize(pool, dim=1), F.normalize(emb, dim=1)
        return out

    def our_features(self, model, b):
        out = {}
        for m in ("vis", "ir"):
            inputs, partners = {m: b.x[m]}, {m: b.x[f"partner_{m}"]}
            out[f"{m} pool (6 stripes)"] = model.extract(inputs, partners, "pre")
            out[f"{m} fc (6 embeddings)"] = model.extract(inputs, partners, "post")
        return out

    def reference_train(self, ref, mods, b):
        logits, feats = ref(b.x["vis"], b.x["ir"], b.x["partner_vis"], b.x["partner_ir"])
        ce, het = nn.CrossEntropyLoss(), mods["heterogeneity_loss"].hetero_loss(margin=0, dist_type="l2")
        label1 = label2 = b.labels_vis
        loss_id = sum(ce(o, b.labels) for o in logits)
        loss_hc = sum(het(*f.chunk(2, 0), label1, label2) for f in feats)
        total = sum(ce(o, b.labels) + 0.5 * het(*f.chunk(2, 0), label1, label2) for o, f in zip(logits, feats))
        inputs = {f"head {h + 1} logits": o for h, o in enumerate(logits)}
        inputs.update({f"head {h + 1} l2(embedding)": f for h, f in enumerate(feats)})
        return inputs, {"id": loss_id, "hc": loss_hc, "total": total}

    def our_train(self, model, loss_fn, recipe, b):
        out = model({"vis": b.x["vis"], "ir": b.x["ir"]}, {"vis": b.x["partner_vis"], "ir": b.x["partner_ir"]})
        losses = loss_fn(out, b.labels, b.is_ir, recipe)
        n = b.labels_vis.shape[0]

        def rows(h: int, t: torch.Tensor) -> torch.Tensor:  # heads 9-10: [gen-from-IR; gen-from-vis] in the reference
            return torch.cat([t[n:], t[:n]]) if h >= 8 else t

        inputs = {f"head {h + 1} logits": rows(h, out["logits"][h]) for h in range(out["logits"].shape[0])}
        inputs.update({f"head {h + 1} l2(embedding)": rows(h, F.normalize(out["embeddings"][h].float(), dim=1))
                       for h in range(out["embeddings"].shape[0])})
        return inputs, {k: losses[k] for k in ("id", "hc", "total")}


class MSCMNetAdapter(AGWAdapter):
    """MSCMNet (``MSCMNet`` + ``mscmnet_loss``) vs its model.py ``embed_net``, loss.py ``QuarCenterTripletLoss``, train.py.

    Its model.py is AGW's with augmented-view stems and MIMB blocks added: it loads, builds,
    maps the shared parts and reads test features as :class:`AGWAdapter` does."""

    method = "mscmnet"
    size = (384, 192)  # model.py hard-codes the MIMB token width 288 = 24 x 12 (layer3 at 384 x 192)
    ids, per_id = 2, 2
    views = ("vis", "vis_aug", "ir", "ir_aug")
    zero_gradient = (*MethodAdapter.zero_gradient, r"mimb\.blocks\.\d\.(narrow|resize)\.bias")  # + convolutions before LayerNorm
    compared = (
        "test features: model.py embed_net(x, x, x, x, modal=1|2) eval outputs (stems averaged) = our extract('pre'|'post')",
        "losses: train.py's CrossEntropyLoss(out0, cat(label1, label1, label2, label2)) + QuarCenterTripletLoss(k_size=4, "
        "margin=0.7)(feat, labels), in float32 (train.py autocasts to fp16 on CUDA)",
    )

    def check_size(self, size):
        if size != self.size:
            raise UserError(f"--size {size[0]}x{size[1]}: MSCMNet's model.py hard-codes 384x192 (MIMB tokens of 24 x 12); pass 384x192")

    def rules(self):
        return [
            *super().rules(),
            (r"backbone\.stems\.vis_aug\.(.+)", r"visible_moduleA.visible.\1"),
            (r"backbone\.stems\.ir_aug\.(.+)", r"thermal_moduleA.thermal.\1"),
            (r"mimb\.blocks\.(\d)\.narrow\.(.+)", r"layerATT\1.ATT_narrow.\2"),
            (r"mimb\.blocks\.(\d)\.broad\.(.+)", r"layerATT\1.ATT_broad.\2"),
            (r"mimb\.blocks\.(\d)\.(ln_1|ln_2|attn|mlp)\.(.+)", r"layerATT\1.\2.\3"),
            (r"mimb\.blocks\.(\d)\.ln_guide\.(.+)", r"layerATT\1.ln_1o.\2"),
            (r"mimb\.blocks\.([01])\.resize\.(.+)", r"layerATT\1.ATT_narrow1.\2"),  # guides at H/4
            (r"mimb\.blocks\.2\.resize\.(.+)", r"layerATT2.ATT_narrow2.\1"),  # guide at H/8
        ]

    def reference_features(self, ref, b):
        return _agw_family_features(lambda m, x: ref(x, x, x, x, modal=1 if m == "vis" else 2), None, b)

    def reference_train(self, ref, mods, b):
        feat, logits = ref(b.x["vis"], b.x["vis_aug"], b.x["ir"], b.x["ir_aug"])
        labels = torch.cat([b.labels_vis] * 4)  # cat(label1, label1, label2, label2)
        loss_id = nn.CrossEntropyLoss()(logits, labels)
        loss_qct = mods["loss"].QuarCenterTripletLoss(k_size=4, margin=0.7)(feat, labels)
        return {"feat_pre_bn": feat, "logits": logits}, {"id": loss_id, "qct": loss_qct, "total": loss_id + loss_qct}

    def our_train(self, model, loss_fn, recipe, b):
        out = model({v: b.x[v] for v in self.views})
        losses = loss_fn(out, b.labels, b.is_ir, recipe)
        return {k: out[k] for k in ("feat_pre_bn", "logits")}, {k: losses[k] for k in ("id", "qct", "total")}


class CAJAdapter(AGWAdapter):
    """CAJ = the ablation variant ``agw-caj`` (``AGWNet`` on CAJ's views + ``agw_loss`` with ADP)
    vs ICCV21_CAJ/model.py ``embed_net``, loss.py ``TripletLoss_ADP``, train_ext.py."""

    method = "caj"
    views = ("vis", "vis_ca", "ir")
    compared = (
        "test features: ICCV21_CAJ/model.py embed_net(modal=1|2) eval outputs l2norm(x_pool), l2norm(feat) = our extract('pre'|'post')",
        "losses: train_ext.py's CrossEntropyLoss(out0, labels) + TripletLoss_ADP(alpha=1, gamma=1, square=1)(feat, labels), "
        "labels cat(label1, label1, label2), visible input cat(input10, input11) (plain and channel-exchanged views)",
    )

    def overrides(self, size):
        o = super().overrides(size)
        o["fusion"]["recipes"] = {"agw": {"views": "caj", "triplet": "adp", "erasing_p": 0.5}}  # the modifier caj
        return o

    def build_ours(self, size, num_classes):
        return build_ours("agw", self.overrides(size), num_classes)  # CAJ is AGW's network with the caj modifier

    def reference_train(self, ref, mods, b):
        labels = torch.cat([b.labels_vis, b.labels_vis, b.labels_vis])  # cat(label1, label1, label2)
        feat, logits = ref(torch.cat([b.x["vis"], b.x["vis_ca"]]), b.x["ir"])
        loss_id = nn.CrossEntropyLoss()(logits, labels)
        loss_tri, _ = mods["loss"].TripletLoss_ADP(alpha=1, gamma=1, square=1)(feat, labels)
        return {"feat_pre_bn": feat, "logits": logits}, {"id": loss_id, "adp": loss_tri, "total": loss_id + loss_tri}

    def our_train(self, model, loss_fn, recipe, b):
        out = model({v: b.x[v] for v in self.views})
        losses = loss_fn(out, b.labels, b.is_ir, recipe)
        return {k: out[k] for k in ("feat_pre_bn", "logits")}, {k: losses[k] for k in ("id", "adp", "total")}


class GLMNAdapter(MethodAdapter):
    """GLMN (``GLMNNet`` + ``glmn_loss``) vs GFMNet model_test0.py ``embed_net``, loss.py ``TripletLoss_ADP0``, train_ext_test0.py."""

    method = "glmn"
    size = (192, 96)  # layer4 12 x 6: G's max_pool2d kernel (3, W) gives 4 stripes
    views = ("vis", "vis_ca", "ir")
    zero_gradient = (*MethodAdapter.zero_gradient, r"afam\.non_local\.W\.0\.bias")
    compared = (
        "test features: model_test0.py embed_net(modal=1|2) eval outputs l2norm(x_pool), l2norm(feat) = our extract(flip=False); "
        "with flip: testa.py's (f(x) + f(flip x)) / 2, which ours renormalises, compared after that normalisation",
        "losses: train_ext_test0.py's CrossEntropyLoss + TripletLoss_ADP0(alpha=1, gamma=1, square=1) global + 0.5 x its aligned "
        "local triplet (margin 0.3); labels cat(label1, label1, label2), visible input cat(plain, channel-exchanged)",
    )

    def check_size(self, size):
        super().check_size(size)
        if (size[0] // 16) % 3 or size[0] // 16 < 6:
            raise UserError(f"--size {size[0]}x{size[1]}: G's stripes are 3 rows of the H/16 map; pass H with H / 16 a multiple of 3, "
                            "at least 96 (default 192x96)")

    def stubs(self, patches):
        patches.note("IPython replaced by a module whose embed() does nothing: model_test0.py, loss.py and aligned/local_dist.py "
                     "import it for debugging only")
        return {"IPython": _stub_module("IPython", embed=lambda *a, **k: None)}

    def load(self, load, patches):
        mods = {"model": load("model_test0"), "loss": load("loss")}
        patch_resnet_download(patches, mods["model"], "model_test0.py")
        return mods

    def build_reference(self, mods, num_classes, patches):
        # train_ext_test0.py: embed_net(n_class, no_local='on', gm_pool='on', arch, share_net=2) (README --share_net 2)
        return mods["model"].embed_net(num_classes, no_local="on", gm_pool="on", arch="resnet50", share_net=2)

    def overrides(self, size):
        o = super().overrides(size)
        o["fusion"].setdefault("recipes", {})["glmn"] = {"num_stripes": size[0] // 16 // 3}
        return o

    def rules(self):
        return [
            (r"specific\.vis\.stem\.(.+)", r"visible_module.visible.\1"),
            (r"specific\.vis\.(layer1\..+)", r"visible_module.visible.\1"),
            (r"specific\.ir\.stem\.(.+)", r"thermal_module.thermal.\1"),
            (r"specific\.ir\.(layer1\..+)", r"thermal_module.thermal.\1"),
            (r"(layer[2-4]\..+)", r"base_resnet.base.\1"),
            *nonlocal_rules("nonlocal_layer", "NL_"),
            (r"afam\.channel_attention\.(fc1|fc2)\.weight", r"afam.channel_attention.\1.weight"),
            (r"afam\.spatial_attention\.conv\.weight", r"afam.spatial_attention.conv1.weight"),
            (r"afam\.non_local\.g\.(weight|bias)", r"afam.non_local.g.0.\1"),
            (r"afam\.non_local\.(theta|phi|W)\.(.+)", r"afam.non_local.\1.\2"),
            (r"bnneck\.bn\.(.+)", r"bottleneck.\1"),
            (r"bnneck\.classifier\.weight", r"classifier.weight"),
            (r"local\.bn\.(.+)", r"bn.\1"),
            (r"local\.conv\.(weight|bias)", r"conv1.\1"),
        ]

    def reference_features(self, ref, b):
        out = {}
        for m, modal in (("vis", 1), ("ir", 2)):
            pool, fc = ref(b.x[m], b.x[m], modal=modal)
            pool_f, fc_f = ref(b.x[m].flip(-1), b.x[m].flip(-1), modal=modal)
            out[f"{m} pool"], out[f"{m} fc"] = pool, fc
            out[f"{m} pool + flip"], out[f"{m} fc + flip"] = F.normalize((pool + pool_f) / 2, dim=1), F.normalize((fc + fc_f) / 2, dim=1)
        return out

    def our_features(self, model, b):
        out = {}
        for m in ("vis", "ir"):
            for feature, name in (("pre", "pool"), ("post", "fc")):
                out[f"{m} {name}"] = model.extract({m: b.x[m]}, None, feature, flip=False)
                out[f"{m} {name} + flip"] = model.extract({m: b.x[m]}, None, feature, flip=True)
        return out

    def reference_train(self, ref, mods, b):
        labels = torch.cat([b.labels_vis, b.labels_vis, b.labels_vis])  # cat(label1, label1, label2)
        feat, logits, lf = ref(torch.cat([b.x["vis"], b.x["vis_ca"]]), b.x["ir"])
        loss_id = nn.CrossEntropyLoss()(logits, labels)
        loss_adp, loss_local, _ = mods["loss"].TripletLoss_ADP0(alpha=1, gamma=1, square=1)(feat, labels, lf)
        inputs = {"feat_pre_bn": feat, "logits": logits, "local (stripes)": lf.permute(0, 2, 1)}
        return inputs, {"id": loss_id, "adp": loss_adp, "local": loss_local, "total": loss_id + loss_adp + loss_local * 0.5}

    def our_train(self, model, loss_fn, recipe, b):
        out = model({v: b.x[v] for v in self.views})
        losses = loss_fn(out, b.labels, b.is_ir, recipe)
        inputs = {"feat_pre_bn": out["feat_pre_bn"], "logits": out["logits"], "local (stripes)": out["local"]}
        return inputs, {k: losses[k] for k in ("id", "adp", "local", "total")}


ADAPTERS: dict[str, type[MethodAdapter]] = {a.method: a for a in (AGWAdapter, CAJAdapter, TSMEAdapter, MSOAdapter, MSCMNetAdapter,
                                                                    GLMNAdapter)}


# --------------------------------------------------------------------------- the comparison


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64; inf when the shapes differ."""
    if a.shape != b.shape:
        return float("inf")
    return (a.detach().double() - b.detach().double()).abs().max().item() if a.numel() else 0.0


def max_rel_diff(ours: torch.Tensor | None, ref: torch.Tensor | None, scale: float = 0.0) -> float:
    """max |ours - ref| / max(max |ref|, scale, 1e-12); a missing gradient counts as zeros."""
    if ours is None and ref is None:
        return 0.0
    like = ours if ours is not None else ref
    ours = torch.zeros_like(like) if ours is None else ours
    ref = torch.zeros_like(like) if ref is None else ref
    if ours.shape != ref.shape:
        return float("inf")
    scale = max(ref.detach().double().abs().max().item(), scale, GRAD_FLOOR)
    return max_abs_diff(ours, ref) / scale


def _count(params: list[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


def compare_networks(adapter: MethodAdapter, ref: nn.Module, mods: dict[str, types.ModuleType], ours: nn.Module, loss_fn: Callable,
                     recipe: Any, batch: Batch, key_map: dict[str, str], seed: int) -> dict[str, Any]:
    """Run both sides on ``batch`` and measure the differences (the weights are already equal).

    Returns:
        A dict: ``features``, ``loss_inputs``, ``losses`` (name -> figures), ``grads``
        (summary), ``params`` (counts) and the four headline maxima.
    """
    ref.eval()
    ours.eval()
    with torch.no_grad():
        f_ref, f_ours = adapter.reference_features(ref, batch), adapter.our_features(ours, batch)
    features = {k: max_abs_diff(f_ours[k], f_ref[k]) for k in f_ref}

    ref.train()
    ours.train()
    torch.manual_seed(seed)
    in_ref, loss_ref = adapter.reference_train(ref, mods, batch)
    torch.manual_seed(seed)
    in_ours, loss_ours = adapter.our_train(ours, loss_fn, recipe, batch)
    loss_inputs = {k: max_abs_diff(in_ours[k], in_ref[k]) / max(in_ref[k].detach().abs().max().item(), GRAD_FLOOR) for k in in_ref}
    losses = {k: {"ours": float(loss_ours[k]), "reference": float(loss_ref[k]), "abs_diff": abs(float(loss_ours[k]) - float(loss_ref[k]))}
              for k in loss_ref}
    ref.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    loss_ref["total"].backward()
    loss_ours["total"].backward()

    ref_params = dict(ref.named_parameters())
    our_params = dict(ours.named_parameters())
    module_scale: dict[str, float] = {}  # our module name -> largest |ref gradient| among its parameters
    for name in our_params:
        q = ref_params[key_map[name]]
        scale = 0.0 if q.grad is None else q.grad.detach().abs().max().item()
        module_scale[_module_of(name)] = max(module_scale.get(_module_of(name), 0.0), scale)

    def scale_of(name: str) -> float:
        return max(module_scale[_module_of(name)], GRAD_FLOOR)

    zero_patterns = [re.compile(p) for p in adapter.zero_gradient]
    rel, zero = {}, {}
    for name, p in our_params.items():
        q = ref_params[key_map[name]]
        if not (p.requires_grad or q.requires_grad):
            continue
        if any(z.fullmatch(name) for z in zero_patterns):
            sizes = [g.detach().abs().max().item() for g in (p.grad, q.grad) if g is not None]
            zero[name] = max(sizes or [0.0]) / scale_of(name)
        else:
            rel[name] = max_rel_diff(p.grad, q.grad, scale_of(name))
    mapped = {key_map[n] for n in our_params}
    unmapped = [p for n, p in ref_params.items() if n not in mapped]
    stray = [n for n, p in ref_params.items() if n not in mapped and p.grad is not None and bool(p.grad.abs().max() > 0)]
    worst = max(rel, key=lambda n: (rel[n] != rel[n], rel[n])) if rel else ""  # NaN first
    return {
        "features": features,
        "loss_inputs": loss_inputs,
        "losses": losses,
        "grads": {"compared": len(rel), "worst": worst, "worst_rel_diff": rel.get(worst, 0.0),
                  "zero_in_exact_arithmetic": len(zero), "zero_max_rel_to_layer": max(zero.values(), default=0.0),
                  "reference_unmapped_with_gradient": stray},
        "params": {
            "ours": _count(list(our_params.values())), "ours_tensors": len(our_params),
            "reference": _count(list(ref_params.values())), "reference_tensors": len(ref_params),
            "reference_without_gradient": _count([p for p in ref_params.values() if p.grad is None]),
            "reference_unmapped": _count(unmapped), "reference_unmapped_tensors": len(unmapped),
        },
        "feature_max_abs_diff": _worst(features.values()),
        "loss_max_abs_diff": _worst(v["abs_diff"] for v in losses.values()),
        "loss_input_max_rel_diff": _worst(loss_inputs.values()),
        "grad_max_rel_diff": _worst(rel.values()),
    }


def _module_of(param_name: str) -> str:
    """'backbone.layer1.0.conv1.weight' -> 'backbone.layer1.0.conv1'."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _worst(values: Iterable[float]) -> float:
    """The largest value; NaN if any is NaN (a NaN difference must not hide behind max())."""
    values = list(values)
    if any(v != v for v in values):
        return float("nan")
    return max(values, default=0.0)


def verdict(report: dict[str, Any]) -> bool:
    """True when every headline figure is within its tolerance, the gradients that are zero
    in exact arithmetic are negligible (below 1e-2 of their layer's) and no unmapped
    reference parameter received a gradient."""
    return (report["feature_max_abs_diff"] <= TOLERANCES["feature"] and report["loss_max_abs_diff"] <= TOLERANCES["loss"]
            and report["loss_input_max_rel_diff"] <= TOLERANCES["loss_input"] and report["grad_max_rel_diff"] <= TOLERANCES["grad"]
            and report["grads"]["zero_max_rel_to_layer"] <= ZERO_GRADIENT_TOLERANCE
            and not report["grads"]["reference_unmapped_with_gradient"])


def build_ours(method: str, overrides: dict[str, Any], num_classes: int) -> tuple[nn.Module, Callable, Any]:
    """Our network, loss function and recipe from the paper profile with ``overrides``."""
    cfg = load_config("paper", overrides=overrides)
    model, loss_fn = build_method(method, cfg, num_classes)
    return model, loss_fn, cfg.fusion.recipe(method)


def run(method: str, reference_dir: Path, *, size: tuple[int, int] | None = None, ids: int | None = None, per_id: int | None = None,
        seed: int = 0, edge: str | None = None) -> dict[str, Any]:
    """The whole comparison for one method; returns the report (see :func:`compare_networks`).

    Raises:
        UserError: ``reference_dir`` is not the expected checkout, or an invalid size/batch.
    """
    adapter = ADAPTERS[method]()
    if edge is not None:
        if not isinstance(adapter, MSOAdapter):
            raise UserError(f"--edge chooses MSO's edge operator; --method {method} has none")
        if edge not in ("laplace", *PEF_EDITS):
            raise UserError(f"--edge {edge!r}: MSO's PEF.py offers laplace, sobel or prewitt")
        adapter.edge = edge
    size = size or adapter.size
    ids, per_id = ids or adapter.ids, per_id or adapter.per_id
    adapter.check_size(size)
    if ids < 2 or per_id < 1:
        raise UserError(f"--ids {ids} --per-id {per_id}: the triplet losses need at least 2 identities and 1 image each")
    verify_reference(method, reference_dir)
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    batch = make_batch(adapter.views, size, ids, per_id, generator)
    with Patches() as patches, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the references' deprecated calls (pretrained=, addmm_(beta, alpha, ...), init.constant)
        with reference_imports(reference_dir / REFERENCES[method].subdir, adapter.stubs(patches)) as load:
            mods = adapter.load(load, patches)
        torch.manual_seed(seed)
        ref = adapter.build_reference(mods, batch.num_classes, patches)
        randomise_(ref, generator)
        calibration = make_batch(adapter.views, size, ids, per_id, generator)
        calibrate_bn_(ref, lambda: adapter.reference_train(ref, mods, calibration), generator)
        ours, loss_fn, recipe = adapter.build_ours(size, batch.num_classes)
        our_state = ours.state_dict()
        key_map = map_keys(adapter.rules(), list(our_state))
        ours.load_state_dict(mapped_state(key_map, ref.state_dict(), our_state), strict=True)
        report = compare_networks(adapter, ref, mods, ours, loss_fn, recipe, batch, key_map, seed)
        patches_applied = list(patches.applied)
    ref_info = REFERENCES[method]
    report.update({
        "method": method,
        "reference": {"repository": ref_info.repository, "commit": ref_info.commit, "dir": str(reference_dir), "note": ref_info.note},
        "input_size": list(size), "batch": {"ids": ids, "images_per_id": per_id, "rows_per_modality": ids * per_id},
        "seed": seed, "dtype": "float32", "device": "cpu", "compared": list(adapter.compared),
        **({"edge": adapter.edge} if isinstance(adapter, MSOAdapter) else {}),
        "patches": patches_applied, "key_map": key_map, "tolerances": dict(TOLERANCES),
        "seconds": round(time.perf_counter() - t0, 1),
    })
    report["passed"] = verdict(report)
    return report


# --------------------------------------------------------------------------- output


def format_table(report: dict[str, Any], show_map: bool = False) -> str:
    """The human-readable report."""
    r, p = report["reference"], report["params"]
    h, w = report["input_size"]
    lines = [
        f"fidelity of --method {report['method']}{' --edge ' + report['edge'] if 'edge' in report else ''} to {r['repository']} "
        f"@ {r['commit'][:7]} ({r['dir']})",
        f"input {h} x {w}; {report['batch']['ids']} identities x {report['batch']['images_per_id']} images per modality; "
        f"seed {report['seed']}; float32 on the CPU; {report['seconds']} s",
        "patches applied to the reference, in memory (nothing is written to its folder):",
        *([f"  - {x}" for x in report["patches"]] or ["  (none)"]),
        "compared:",
        *[f"  - {x}" for x in report["compared"]],
        f"parameters: ours {p['ours']:,} in {p['ours_tensors']} tensors, every one loaded from the reference; reference "
        f"{p['reference']:,} in {p['reference_tensors']} tensors, of which {p['reference_unmapped']:,} in "
        f"{p['reference_unmapped_tensors']} tensors are unused by its forward (no gradient: {p['reference_without_gradient']:,})",
        "",
        f"{'quantity':<46} {'max |ours - ref|':>18}",
    ]
    for name, d in report["features"].items():
        lines.append(f"{'test feature ' + name:<46} {d:>18.2e}")
    for name, d in report["loss_inputs"].items():
        lines.append(f"{'loss input ' + name + ' (relative)':<46} {d:>18.2e}")
    for name, d in report["losses"].items():
        lines.append(f"{'loss ' + name + ' = ' + format(d['reference'], '.6f'):<46} {d['abs_diff']:>18.2e}")
    g = report["grads"]
    lines.append(f"{'gradients, ' + str(g['compared']) + ' tensors (relative)':<46} {report['grad_max_rel_diff']:>18.2e}")
    if g["worst"]:
        lines.append(f"  largest at {g['worst']}")
    if g["zero_in_exact_arithmetic"]:
        lines.append(f"  {g['zero_in_exact_arithmetic']} bias gradients are zero in exact arithmetic (removed by the normalisation that "
                     f"follows): float noise, at most {g['zero_max_rel_to_layer']:.1e} of their layer's largest gradient on either side")
    if g["reference_unmapped_with_gradient"]:
        lines.append(f"  reference parameters outside the key map that received a gradient: {', '.join(g['reference_unmapped_with_gradient'][:5])}")
    t = report["tolerances"]
    lines.append("")
    lines.append(f"{'PASS' if report['passed'] else 'FAIL'}: feature {report['feature_max_abs_diff']:.2e} (<= {t['feature']:g}), "
                 f"loss {report['loss_max_abs_diff']:.2e} (<= {t['loss']:g}), loss inputs {report['loss_input_max_rel_diff']:.2e} "
                 f"(<= {t['loss_input']:g} relative), gradients {report['grad_max_rel_diff']:.2e} (<= {t['grad']:g} relative)")
    if show_map:
        lines.append("")
        lines.append(f"key map ({len(report['key_map'])} tensors, ours <- reference):")
        lines += [f"  {k} <- {v}" for k, v in report["key_map"].items()]
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (H, W); raises UserError on anything else."""
    match = re.fullmatch(r"(\d+)[x,](\d+)", text.strip())
    if not match:
        raise UserError(f"--size {text!r}: write it as HxW, e.g. 288x144")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (0 pass, 1 fail, 2 bad reference or option)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=sorted(ADAPTERS))
    parser.add_argument("--reference", required=True, type=Path, help="checkout of the method's reference repository")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--show-map", action="store_true", help="also print the key map, ours <- reference")
    parser.add_argument("--size", default=None, help="input HxW (default: the method's, see the module docstring)")
    parser.add_argument("--ids", type=int, default=None, help="identities in the batch")
    parser.add_argument("--per-id", type=int, default=None, help="images per identity and modality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edge", default=None, help="MSO only: laplace (PEF.py as released, default), sobel or prewitt")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size) if args.size else None
        report = run(args.method, args.reference, size=size, ids=args.ids, per_id=args.per_id, seed=args.seed, edge=args.edge)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {k: v for k, v in report.items() if k != "key_map" or args.show_map}
        print(json.dumps(out, indent=2))
    else:
        print(format_table(report, args.show_map))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
