"""benchmarks/fidelity.py: our networks against the authors' released code.

Two kinds of tests:

* the harness's own logic, with no reference code (CI has no network): key maps cover our
  networks exactly, a folder that is not the expected repository gives exit status 2 and
  one line, the JSON report's shape and exit statuses 0 / 1 on a toy "reference" written
  here, the randomisation and BatchNorm calibration, the relative differences;
* ``@pytest.mark.fidelity``: the real comparison per method, when ``VIREID_REFERENCE_DIR``
  names a folder holding the checkouts (sub-folders as ``git clone`` names them:
  Cross-Modal-Re-ID-baseline, Revisiting-Modality-specific-Feature-Compensation-for-Visible-
  Infrared-Person-Re-Identification at 99bc54c, DIP_work, MSCMNet, GFMNet); skipped
  otherwise. Each takes one to three minutes on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _load_harness():
    spec = importlib.util.spec_from_file_location("vireid_fidelity", ROOT / "benchmarks" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fd = _load_harness()


# --------------------------------------------------------------------------- key maps


@pytest.mark.parametrize("method", sorted(fd.ADAPTERS))
def test_key_map_covers_every_tensor_of_our_network_once(method):
    adapter = fd.ADAPTERS[method]()
    with torch.device("meta"):  # shapes and names only: no memory, no time
        model, _, _ = adapter.build_ours(adapter.size, 5)
    keys = list(model.state_dict())
    key_map = fd.map_keys(adapter.rules(), keys)
    assert list(key_map) == keys
    assert len(set(key_map.values())) == len(keys)  # injective: no reference tensor loaded twice


def test_map_keys_names_an_uncovered_key_and_a_collision():
    rules = [(r"body\.(\d)\.weight", r"base.\1.w")]
    assert fd.map_keys(rules, ["body.0.weight", "body.1.weight"]) == {"body.0.weight": "base.0.w", "body.1.weight": "base.1.w"}
    with pytest.raises(fd.KeyMapError, match="no key-map rule matches our key 'head.bias'"):
        fd.map_keys(rules, ["body.0.weight", "head.bias"])
    with pytest.raises(fd.KeyMapError, match="'a.weight' and 'b.weight' both map to reference key 'x'"):
        fd.map_keys([(r"[ab]\.weight", "x")], ["a.weight", "b.weight"])


def test_mapped_state_refuses_a_missing_reference_key_and_a_shape_mismatch():
    ours = {"w": torch.zeros(2, 3)}
    assert torch.equal(fd.mapped_state({"w": "r"}, {"r": torch.ones(2, 3)}, ours)["w"], torch.ones(2, 3))
    with pytest.raises(fd.KeyMapError, match="maps to 'q', which the reference state dict does not have"):
        fd.mapped_state({"w": "q"}, {"r": torch.ones(2, 3)}, ours)
    with pytest.raises(fd.KeyMapError, match=r"\(2, 3\) and reference 'r' \(3, 2\) differ in shape"):
        fd.mapped_state({"w": "r"}, {"r": torch.ones(3, 2)}, ours)


# --------------------------------------------------------------------------- the reference check (exit 2)


def test_git_blob_ids_are_git_s(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert fd.git_blob_sha1(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert fd.git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_exit_2_with_one_line_for_a_folder_that_is_not_the_repository(tmp_path, capsys):
    assert fd.main(["--method", "agw", "--reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "is not a checkout of mangye16/Cross-Modal-Re-ID-baseline at commit e817a26: model.py is missing" in err

    assert fd.main(["--method", "glmn", "--reference", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder; pass a checkout of cq0907/GFMNet at commit 1746937" in capsys.readouterr().err


def test_exit_2_names_the_tsme_commit_and_a_modified_file(tmp_path, capsys):
    assert fd.main(["--method", "tsme", "--reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "at commit 99bc54c: model.py is missing (model.py, train.py and test.py were deleted in the next commits)" in err
    assert "checkout 99bc54c" in err

    for rel in fd.REFERENCES["agw"].files:
        (tmp_path / rel).write_text("# not the released file\n")
    assert fd.main(["--method", "agw", "--reference", str(tmp_path)]) == 2
    assert "model.py differs from mangye16/Cross-Modal-Re-ID-baseline at commit e817a26" in capsys.readouterr().err


def test_bad_options_exit_2(tmp_path, capsys):
    assert fd.main(["--method", "agw", "--reference", str(tmp_path), "--size", "100x50"]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert fd.main(["--method", "mscmnet", "--reference", str(tmp_path), "--size", "288x144"]) == 2
    assert "hard-codes 384x192" in capsys.readouterr().err
    assert fd.main(["--method", "agw", "--reference", str(tmp_path), "--edge", "sobel"]) == 2
    assert "--method agw has none" in capsys.readouterr().err
    assert fd.main(["--method", "agw", "--reference", str(tmp_path), "--size", "big"]) == 2
    assert "write it as HxW" in capsys.readouterr().err


def test_pef_edit_refuses_another_file(tmp_path):
    (tmp_path / "PEF.py").write_text("x = 1\n" * 40)
    with pytest.raises(ValueError, match="is not the PEF.py this edit was written for"):
        fd.pef_with_operator(fd._stub_module("PEF", __file__=str(tmp_path / "PEF.py")), "sobel")
    with pytest.raises(ValueError, match="offers laplace, sobel or prewitt"):
        fd.pef_with_operator(fd._stub_module("PEF", __file__=str(tmp_path / "PEF.py")), "canny")


# --------------------------------------------------------------------------- random weights and statistics


def test_randomise_leaves_no_default_value_and_valid_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Linear(4, 2))
    nn.init.zeros_(net[1].bias)
    fd.randomise_(net, torch.Generator().manual_seed(1))
    bn = net[1]
    assert (bn.bias != 0).all() and (bn.running_mean != 0).all() and (bn.running_var != 1).all()
    assert ((bn.weight >= 0.25) & (bn.weight <= 0.75)).all() and (bn.running_var > 0).all()
    assert bn.num_batches_tracked.item() >= 1


def test_calibration_gives_the_batch_statistics_and_keeps_momentum():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    net = nn.Sequential(nn.Identity(), bn)
    x = torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 7
    net.eval()
    fd.calibrate_bn_(net, lambda: net(x), torch.Generator().manual_seed(0))
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-5)
    assert bn.momentum == 0.1 and not net.training


def test_relative_differences():
    ref = torch.tensor([2.0, -4.0])
    assert fd.max_rel_diff(torch.tensor([2.0, -3.0]), ref) == pytest.approx(0.25)  # 1 / max|ref| 4
    assert fd.max_rel_diff(torch.tensor([2.0, -3.0]), ref, scale=10.0) == pytest.approx(0.1)  # the layer's scale
    assert fd.max_rel_diff(None, ref) == pytest.approx(1.0)  # a missing gradient counts as zeros
    assert fd.max_rel_diff(None, None) == 0.0
    assert fd.max_abs_diff(torch.zeros(2), torch.zeros(3)) == float("inf")
    nan = fd._worst([1e-8, float("nan"), 2e-8])  # max() alone would return 2e-8 here
    assert nan != nan and fd._worst([1e-8, 3e-8]) == 3e-8


# --------------------------------------------------------------------------- a toy reference, end to end

TOY_MODEL = '''
import cv2  # missing here: the adapter stubs it, as the harness does for MSO
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, n)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return f, self.fc(f)
'''


class _Ours(nn.Module):
    """The toy network again, under other names (as ours differ from the references')."""

    def __init__(self, n: int, skew: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, n)
        self.skew = skew

    def forward(self, x):
        f = torch.relu(self.body(x)).mean(dim=(2, 3)) * self.skew
        return f, self.head(f)


def _toy_adapter(skew: float):
    class Toy(fd.MethodAdapter):
        method = "toy"
        size = (16, 16)
        compared = ("toy features and cross-entropy",)
        zero_gradient = ()

        def stubs(self, patches):
            patches.note("cv2 stubbed")
            return {"cv2": fd._stub_module("cv2")}

        def load(self, load, patches):
            return {"model": load("model")}

        def build_reference(self, mods, num_classes, patches):
            return mods["model"].Net(num_classes)

        def build_ours(self, size, num_classes):
            return _Ours(num_classes, skew), None, None

        def rules(self):
            return [(r"body\.0\.(.+)", r"conv.\1"), (r"body\.1\.(.+)", r"bn.\1"), (r"head\.(.+)", r"fc.\1")]

        def reference_features(self, ref, b):
            return {m: nn.functional.normalize(ref(b.x[m])[0], dim=1) for m in ("vis", "ir")}

        def our_features(self, model, b):
            return {m: nn.functional.normalize(model(b.x[m])[0], dim=1) for m in ("vis", "ir")}

        def reference_train(self, ref, mods, b):
            f, logits = ref(torch.cat([b.x["vis"], b.x["ir"]]))
            return {"feat": f}, {"total": nn.functional.cross_entropy(logits, b.labels)}

        def our_train(self, model, loss_fn, recipe, b):
            f, logits = model(torch.cat([b.x["vis"], b.x["ir"]]))
            return {"feat": f}, {"total": nn.functional.cross_entropy(logits, b.labels)}

    return Toy


@pytest.fixture
def toy_reference(tmp_path, monkeypatch):
    root = tmp_path / "toy-ref"
    root.mkdir()
    (root / "model.py").write_text(TOY_MODEL)
    monkeypatch.setitem(fd.REFERENCES, "toy", fd.Reference("someone/toy", "0" * 40, {"model.py": fd.git_blob_sha1(root / "model.py")}))
    monkeypatch.setitem(fd.CHECKOUT_NAMES, "toy", "toy")
    return root


def test_toy_reference_passes_with_a_complete_json_report(toy_reference, monkeypatch, capsys):
    monkeypatch.setitem(fd.ADAPTERS, "toy", _toy_adapter(1.0))
    sys.modules["model"] = placeholder = type(sys)("model")  # an unrelated module of the same name
    try:
        assert fd.main(["--method", "toy", "--reference", str(toy_reference), "--json"]) == 0
        assert sys.modules["model"] is placeholder  # restored: the reference's module did not leak
    finally:
        del sys.modules["model"]
    assert "cv2" not in sys.modules or sys.modules["cv2"].__dict__.get("__file__")
    report = json.loads(capsys.readouterr().out)
    for key in ("feature_max_abs_diff", "loss_max_abs_diff", "loss_input_max_rel_diff", "grad_max_rel_diff"):
        assert 0.0 <= report[key] <= 1e-6
    assert report["passed"] is True and report["patches"] == ["cv2 stubbed"]
    classes = report["batch"]["ids"] + 2
    assert report["params"]["ours"] == (3 * 4 * 9 + 4) + (4 + 4) + (4 * classes + classes)  # conv, BN, linear
    assert report["params"]["reference"] == report["params"]["ours"] + 6  # + the unused Linear(2, 2)
    assert report["params"]["reference_unmapped"] == 6 and report["params"]["reference_unmapped_tensors"] == 2
    assert report["reference"]["repository"] == "someone/toy" and "key_map" not in report
    assert not list(toy_reference.rglob("__pycache__"))  # nothing written into the reference


def test_toy_reference_fails_when_ours_computes_something_else(toy_reference, monkeypatch, capsys):
    monkeypatch.setitem(fd.ADAPTERS, "toy", _toy_adapter(1.001))
    assert fd.main(["--method", "toy", "--reference", str(toy_reference), "--show-map"]) == 1
    out = capsys.readouterr().out
    assert "FAIL:" in out and "head.weight <- fc.weight" in out
    report = fd.run("toy", toy_reference)
    assert report["loss_input_max_rel_diff"] > 1e-4 and report["grad_max_rel_diff"] > 1e-4 and not report["passed"]


# --------------------------------------------------------------------------- the real references

REFERENCE_DIR = os.environ.get("VIREID_REFERENCE_DIR", "")


@pytest.mark.fidelity
@pytest.mark.parametrize("method, edge", [("agw", None), ("caj", None), ("tsme", None), ("mso", None), ("mso", "sobel"), ("mscmnet", None),
                                          ("glmn", None)])
def test_fidelity_to_the_released_code(method, edge):
    if not REFERENCE_DIR:
        pytest.skip("set VIREID_REFERENCE_DIR to a folder holding the reference checkouts "
                    f"({', '.join(sorted(set(fd.CHECKOUT_NAMES.values())))}); see benchmarks/fidelity.py")
    checkout = Path(REFERENCE_DIR) / fd.CHECKOUT_NAMES[method]
    if not checkout.is_dir():
        pytest.skip(f"no checkout {checkout} (git clone https://github.com/{fd.REFERENCES[method].repository})")
    try:
        report = fd.run(method, checkout, edge=edge)
    except UserError as exc:
        pytest.fail(str(exc))
    assert report["passed"], fd.format_table(report)
    assert report["params"]["ours"] <= report["params"]["reference"]
