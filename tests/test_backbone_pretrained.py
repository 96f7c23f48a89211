"""ImageNet weights into the AGW two-stream backbone and TSME's per-stream ResNets.

Both papers start from torchvision's ImageNet ResNet-50 (AGW model.py ``resnet50(pretrained=True)``
per stem and for the shared layer1-4; TSME model.py one per stream). A tiny ResNet with
torchvision's parameter names stands in for the 100 MB file: every tensor must land where
the papers' code puts it, non-local blocks must keep their zero-initialised W, and a model of
the wrong size must be refused with one line.
"""

import pytest
import torch
from torch import nn

from common.errors import UserError
from common.nets.resnet import Stem, make_layers
from stage2_fusion.backbone import AGWBackbone, PerModalityBackbone

LAYERS = (1, 1, 1, 3)
WIDTH = 8


class _TorchvisionNamed(nn.Module):
    """A ResNet with torchvision's parameter names (conv1, bn1, layer1..4) at a tiny width."""

    def __init__(self, width, layers):
        super().__init__()
        stem = Stem(width)
        self.conv1, self.bn1 = stem.conv1, stem.bn1
        self.layer1, self.layer2, self.layer3, self.layer4 = make_layers(width, layers, 1)
        self.fc = nn.Linear(4, 2)  # torchvision's classifier: never loaded


@pytest.fixture()
def weights(tmp_path):
    torch.manual_seed(0)
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v + 7
             for k, v in _TorchvisionNamed(WIDTH, LAYERS).state_dict().items()}
    path = tmp_path / "resnet50-fake.pth"
    torch.save(state, path)
    return path, state


def test_agw_backbone_gets_the_weights_in_each_stem_and_the_shared_body(weights):
    path, state = weights
    net = AGWBackbone(("vis", "ir"), LAYERS, WIDTH, 1, (0, 1, 1, 0), 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n = net.load_imagenet(str(path))
    own = net.state_dict()
    body = [k for k in state if k.startswith("layer")]
    stem = [k for k in state if k.startswith(("conv1.", "bn1."))]
    assert n == len(body) + 2 * len(stem)  # fc.* dropped
    for key in body:
        assert torch.equal(own[key], state[key]), key
    for m in ("vis", "ir"):
        for key in stem:
            assert torch.equal(own[f"stems.{m}.{key}"], state[key]), (m, key)
    for key, value in own.items():  # everything else untouched: the non-local blocks
        if key.startswith("nonlocal_"):
            assert torch.equal(value, before[key]), key
    assert any(k.startswith("nonlocal_layer2.0.") for k in own)


def test_tsme_per_stream_backbone_gets_one_copy_per_stream(weights):
    path, state = weights
    net = PerModalityBackbone(("vis", "ir", "vis_gen"), LAYERS, WIDTH, 1)
    n = net.load_imagenet(str(path))
    assert n == 3 * (len(state) - 2)  # each stream: everything but fc.weight / fc.bias
    own = net.state_dict()
    for stream in ("vis", "ir", "vis_gen"):
        assert torch.equal(own[f"nets.{stream}.stems.{stream}.conv1.weight"], state["conv1.weight"])
        assert torch.equal(own[f"nets.{stream}.layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
        assert torch.equal(own[f"nets.{stream}.layer1.0.bn1.num_batches_tracked"], state["layer1.0.bn1.num_batches_tracked"])


def test_none_loads_nothing_and_wrong_sizes_are_refused_in_one_line(weights, tmp_path):
    path, _ = weights
    net = AGWBackbone(("vis", "ir"), LAYERS, WIDTH, 1, (0, 0, 0, 0), 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert net.load_imagenet("none") == 0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    wider = AGWBackbone(("vis", "ir"), LAYERS, 2 * WIDTH, 1, (0, 0, 0, 0), 1)
    with pytest.raises(UserError, match="do not fit the re-ID backbone .*layers = \\[3, 4, 6, 3\\]"):
        wider.load_imagenet(str(path))
    with pytest.raises(UserError, match="not found"):
        net.load_imagenet(str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a torchvision ResNet state dict"):
        net.load_imagenet(str(tmp_path / "other.pth"))
    deeper = AGWBackbone(("vis", "ir"), (1, 2, 1, 3), WIDTH, 1, (0, 0, 0, 0), 1)  # layer2.1 has no weights in the file
    before = {k: v.clone() for k, v in deeper.state_dict().items()}
    with pytest.raises(UserError, match=r"do not fit the re-ID backbone \(layer2\.1\..* is not in the file\)"):
        deeper.load_imagenet(str(path))
    assert all(torch.equal(v, before[k]) for k, v in deeper.state_dict().items()), "nothing loaded in part"


class _Pickled:
    """Not a tensor: a file holding it would run code on load."""


def test_reading_a_resnet_file_unwraps_drops_fc_and_refuses_what_is_not_one(weights, tmp_path):
    from common.nets.resnet import load_resnet_state

    path, state = weights
    read = load_resnet_state(path)
    assert set(read) == {k for k in state if not k.startswith("fc.")} and "fc.weight" in state
    assert all(torch.equal(read[k], state[k]) for k in read)
    torch.save({"state_dict": state, "epoch": 90}, tmp_path / "wrapped.pth")  # a training checkpoint around the weights
    wrapped = load_resnet_state(tmp_path / "wrapped.pth")
    assert wrapped.keys() == read.keys() and all(torch.equal(wrapped[k], read[k]) for k in read)
    no_stem = {k: v for k, v in state.items() if not k.startswith("conv1.")}
    torch.save(no_stem, tmp_path / "no_stem.pth")  # layer4 alone is not enough
    with pytest.raises(UserError, match="not a torchvision ResNet state dict"):
        load_resnet_state(tmp_path / "no_stem.pth")
    torch.save({**state, "extra": _Pickled()}, tmp_path / "code.pth")
    with pytest.raises(UserError, match="code.pth holds Python objects .* unpickling it could run code: pass torchvision's"):
        load_resnet_state(tmp_path / "code.pth")
