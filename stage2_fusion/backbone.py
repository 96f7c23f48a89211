"""The AGW two-stream backbone: modality-specific stems, shared ResNet body, non-local blocks.

Ye et al., AGW (TPAMI 2021), Sec. 4.1 and mangye16/Cross-Modal-Re-ID-baseline:model.py
(``visible_module``, ``thermal_module``, ``base_resnet``, ``non_layers = [0, 2, 3, 0]``):

* each modality has its own stem (conv1, bn1, relu, maxpool);
* layer1..layer4 are shared; layer4 has stride 1 (output (H/16, W/16), 18 x 9 at
  288 x 144);
* non-local blocks run after the last ``nonlocal_blocks[s]`` bottlenecks of stage s
  (AGW: after blocks 2, 3 of layer2 and 3, 4, 5 of layer3).

Module names: ``stems.<modality>.conv1``, ``layer3.4.conv2``, ``nonlocal_layer3.1`` (the
second non-local block of layer3, after ``layer3.4``): tests check placement by name.
Parameter names of the stems and layers match torchvision's ResNet-50, so ImageNet weights
load into both stems and the shared body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from common.data.augment import VIEW_MODALITY
from common.nets.resnet import Stem, init_resnet_, load_resnet_parts, make_layers, stage_channels
from stage2_fusion.layers import NonLocalBlock

StageHook = Callable[[torch.Tensor], torch.Tensor]
# stem_hook(stem output (B, w, H/4, W/4), the inputs that produced it) -> (B, w, H/4, W/4)
StemHook = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def add_nonlocal_blocks(module: nn.Module, stages: Sequence[int], layers: tuple[int, ...], nonlocal_blocks: tuple[int, ...],
                        base_width: int, inter_channels: int) -> None:
    """Give ``module`` AGW's non-local blocks: for each stage s of ``stages``, a ModuleList
    ``nonlocal_layer{s}`` of ``nonlocal_blocks[s - 1]`` :class:`NonLocalBlock` s, run after
    the last that many bottlenecks of ``layer{s}`` (AGW model.py ``NL_2_idx``, ``NL_3_idx``),
    and ``module.nonlocal_after[f"layer{s}"]``, the bottleneck indices they follow.

    Used by :class:`AGWBackbone` (stages 1-4) and GLMN (stages 2-4, its layer1 is per modality).
    """
    if not hasattr(module, "nonlocal_after"):
        module.nonlocal_after = {}
    channels = stage_channels(base_width)
    for stage in stages:
        n_nl, n_blocks = nonlocal_blocks[stage - 1], layers[stage - 1]
        setattr(module, f"nonlocal_layer{stage}", nn.ModuleList(NonLocalBlock(channels[stage - 1], inter_channels) for _ in range(n_nl)))
        module.nonlocal_after[f"layer{stage}"] = list(range(n_blocks - n_nl, n_blocks))


def run_stage(module: nn.Module, stage: int, x: torch.Tensor) -> torch.Tensor:
    """``module.layer{stage}``'s bottlenecks with its non-local blocks after the indices
    :func:`add_nonlocal_blocks` recorded. Shapes: as the ResNet stage."""
    nl_blocks: nn.ModuleList = getattr(module, f"nonlocal_layer{stage}")
    after = module.nonlocal_after[f"layer{stage}"]
    for i, block in enumerate(getattr(module, f"layer{stage}")):
        x = block(x)
        if i in after:
            x = nl_blocks[after.index(i)](x)
    return x


def modality_runs(inputs: dict[str, torch.Tensor], known) -> list[tuple[str, torch.Tensor]]:
    """The streams of ``inputs`` as runs of one modality, in order: consecutive streams whose
    modality (:data:`common.data.augment.VIEW_MODALITY`; a stream's own name otherwise) is
    the same are concatenated along the batch. ``{"vis", "vis_ca", "ir"}`` ->
    ``[("vis", cat(vis, vis_ca)), ("ir", ir)]``; the rows keep the dict's order.

    Raises:
        ValueError: a stream whose modality is not in ``known`` (the stems or networks).
    """
    runs: list[tuple[str, list[torch.Tensor]]] = []
    for name, x in inputs.items():
        modality = VIEW_MODALITY.get(name, name)
        if modality not in known:
            raise ValueError(f"no stem for streams {sorted({VIEW_MODALITY.get(n, n) for n in inputs} - set(known))}; "
                             f"this backbone has {list(known)}")
        if runs and runs[-1][0] == modality:
            runs[-1][1].append(x)
        else:
            runs.append((modality, [x]))
    return [(modality, xs[0] if len(xs) == 1 else torch.cat(xs, dim=0)) for modality, xs in runs]


class AGWBackbone(nn.Module):
    """Modality-specific stems + shared ResNet body with non-local blocks.

    Args:
        stems: names of the input streams that get their own stem (AGW: ``("vis", "ir")``).
        layers: bottlenecks per stage ((3, 4, 6, 3) = ResNet-50).
        base_width: stem width w (64 = ResNet-50); output channels ``32 * w``.
        last_stride: layer4 stride (AGW: 1).
        nonlocal_blocks: non-local blocks after the last n bottlenecks of each stage.
        nonlocal_inter_channels: see :class:`stage2_fusion.layers.NonLocalBlock`.

    Shapes:
        ``forward({"vis": (Bv, 3, H, W), "ir": (Bi, 3, H, W)})`` -> (Bv + Bi, 32w, H/16, W/16)
        with rows in the order the dict lists the streams (visible first).
    """

    def __init__(
        self,
        stems: Sequence[str] = ("vis", "ir"),
        layers: tuple[int, ...] = (3, 4, 6, 3),
        base_width: int = 64,
        last_stride: int = 1,
        nonlocal_blocks: tuple[int, ...] = (0, 2, 3, 0),
        nonlocal_inter_channels: int = 1,
    ) -> None:
        super().__init__()
        self.stems = nn.ModuleDict({name: Stem(base_width) for name in stems})
        self.layer1, self.layer2, self.layer3, self.layer4 = make_layers(base_width, tuple(layers), last_stride)
        self.out_channels = stage_channels(base_width)[-1]
        init_resnet_(self)
        add_nonlocal_blocks(self, (1, 2, 3, 4), tuple(layers), tuple(nonlocal_blocks), base_width, nonlocal_inter_channels)

    def _run_stage(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        return run_stage(self, stage, x)

    def forward_stems(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each stream through its modality's stem, concatenated along the batch: (B, w, H/4, W/4).

        Consecutive streams of one modality (CAJ's "vis" and "vis_ca" views,
        :func:`modality_runs`) go through their stem as one batch, as CAJ's train_ext.py feeds
        ``cat(input10, input11)`` to its visible module (one set of BatchNorm statistics)."""
        return torch.cat([self.stems[modality](x) for modality, x in modality_runs(inputs, self.stems)], dim=0)

    def forward_body(self, x: torch.Tensor, after_layer3: StageHook | None = None, after_layer4: StageHook | None = None) -> torch.Tensor:
        """Shared layer1..layer4 (with non-local blocks); optional hooks after layer3/4.

        Shapes: (B, w, H/4, W/4) -> (B, 32w, H/16, W/16).
        """
        x = self._run_stage(1, x)  # (B, 4w, H/4, W/4)
        x = self._run_stage(2, x)  # (B, 8w, H/8, W/8)
        x = self._run_stage(3, x)  # (B, 16w, H/16, W/16)
        if after_layer3 is not None:
            x = after_layer3(x)
        x = self._run_stage(4, x)  # (B, 32w, H/16, W/16) at last stride 1
        if after_layer4 is not None:
            x = after_layer4(x)
        return x

    def forward(self, inputs: dict[str, torch.Tensor], after_layer3: StageHook | None = None, after_layer4: StageHook | None = None,
                stem_hook: StemHook | None = None) -> torch.Tensor:
        """Stems, then ``stem_hook`` (e.g. edge features added to the stem output), then the body."""
        x = self.forward_stems(inputs)
        if stem_hook is not None:
            x = stem_hook(x, inputs)
        return self.forward_body(x, after_layer3, after_layer4)

    def load_imagenet(self, spec: str) -> int:
        """Load ImageNet ResNet-50 weights (path, "imagenet" or "none") into every stem and
        the shared body; non-local blocks keep their (identity) initialisation.

        Returns:
            Number of tensors loaded.

        Raises:
            UserError: missing file or a backbone that is not ResNet-50 sized.
        """
        renames = [{f"layer{i}.": f"layer{i}." for i in range(1, 5)}]
        renames += [{"conv1.": f"stems.{name}.conv1.", "bn1.": f"stems.{name}.bn1."} for name in self.stems]
        return load_resnet_parts(self, spec, renames, "re-ID backbone")


class PerModalityBackbone(nn.Module):
    """One whole ResNet per modality, nothing shared: TSME's own layout.

    TSME (jnLreID/...:model.py ``visible_net_resnet``, ``thermal_net_resnet``, at 99bc54c)
    runs a separate ImageNet ResNet-50 (last stride 1, no non-local blocks) for every
    stream: visible-real, infrared-real, and likewise for the generated images. Each entry
    here is an :class:`AGWBackbone` with a single stem and its own layer1..layer4.

    Shapes:
        ``forward({"vis": (Bv, 3, H, W), "ir": (Bi, 3, H, W)})`` -> (Bv + Bi, 32w, H/16, W/16),
        rows in the order the dict lists the streams, as :class:`AGWBackbone`.
    """

    def __init__(self, stems: Sequence[str], layers: tuple[int, ...] = (3, 4, 6, 3), base_width: int = 64,
                 last_stride: int = 1) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({name: AGWBackbone((name,), layers, base_width, last_stride, (0, 0, 0, 0)) for name in stems})
        self.out_channels = self.nets[stems[0]].out_channels

    def forward(self, inputs: dict[str, torch.Tensor], after_layer3: StageHook | None = None, after_layer4: StageHook | None = None,
                stem_hook: StemHook | None = None) -> torch.Tensor:
        return torch.cat([self.nets[modality]({modality: x}, after_layer3, after_layer4, stem_hook)
                          for modality, x in modality_runs(inputs, self.nets)], dim=0)

    def load_imagenet(self, spec: str) -> int:
        """ImageNet ResNet-50 weights into every modality's network; returns tensors loaded."""
        return sum(net.load_imagenet(spec) for net in self.nets.values())


def build_backbone(backbone_cfg, stems: Sequence[str] = ("vis", "ir"), *, shared: bool = True) -> AGWBackbone | PerModalityBackbone:
    """The re-ID backbone of a :class:`common.config.BackboneConfig`, pretrained if asked.

    ``shared=True``: AGW's two-stream layout (modality-specific stems, shared body,
    non-local blocks). ``shared=False``: TSME's layout, a whole ResNet per stream without
    non-local blocks (:class:`PerModalityBackbone`).
    """
    if not shared:
        model = PerModalityBackbone(tuple(stems), tuple(backbone_cfg.layers), backbone_cfg.base_width, backbone_cfg.last_stride)
        model.load_imagenet(backbone_cfg.pretrained)
        return model
    return _build_shared(backbone_cfg, stems)


def _build_shared(backbone_cfg, stems: Sequence[str]) -> AGWBackbone:
    """An :class:`AGWBackbone` from a :class:`common.config.BackboneConfig`, pretrained if asked."""
    model = AGWBackbone(
        stems,
        tuple(backbone_cfg.layers),
        backbone_cfg.base_width,
        backbone_cfg.last_stride,
        tuple(backbone_cfg.nonlocal_blocks),
        backbone_cfg.nonlocal_inter_channels,
    )
    model.load_imagenet(backbone_cfg.pretrained)
    return model
