"""CAJ (Ye et al., ICCV 2021) as the control without a generator: its joint-learning views
(:class:`common.data.augment.CajViews`), its ADP triplet, and the ablation modifier ``caj``
on AGW (``agw-caj``, CAJ's train_ext.py) and on TSME (``tsme-caj``: the views with partners)."""

import pytest
import torch

from common.data.augment import CAJ_ERASE_FILL, CajViews, imagenet_normalize, view_rows
from stage2_fusion.losses import adp_triplet_loss, per_view_rows
from stage2_fusion.methods import load_config
from stage2_fusion.methods.agw import CAJ_ADP, AGWNet, agw_loss
from stage2_fusion.methods.glmn import GLMNAugment
from tests.conftest import TINY_OVERRIDES

H, W = 16, 8


def _tiny(**recipe):
    return load_config("demo", overrides={**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "recipes": {
        **TINY_OVERRIDES["fusion"]["recipes"], "agw": {**TINY_OVERRIDES["fusion"]["recipes"]["agw"], **recipe}}}})


def test_caj_views_erase_the_plain_view_after_normalising_unlike_glmn():
    torch.manual_seed(0)
    n = 300
    colour = torch.tensor([0.1, 0.9, 0.3]).view(1, 3, 1, 1).expand(n, 3, H, W)
    images, visible = torch.cat([colour, torch.full((n, 3, H, W), 0.7)]), torch.arange(2 * n) < n
    caj, _ = CajViews((H, W), pad=0, flip_p=0.0, erasing_p=0.5)(images, visible)
    glmn, _ = GLMNAugment((H, W), pad=0, flip_p=0.0, erasing_p=0.5)(images, visible)
    background = imagenet_normalize(colour[:1])[0, :, 0, :1]  # (3, 1)
    after = torch.tensor(CAJ_ERASE_FILL).view(3, 1)  # CAJ: ChannelRandomErasing after normalize -> its numbers
    before = imagenet_normalize(after.view(1, 3, 1, 1)).view(3, 1)  # GLMN: erased in [0, 1] units, then normalised
    for out, fill in ((caj, after), (glmn, before)):
        values = out["vis"].permute(1, 0, 2, 3).flatten(1)  # (3, n H W)
        assert (torch.isclose(values, fill) | torch.isclose(values, background)).all()
        assert torch.isclose(values, fill).any(dim=1).all()
    assert caj["vis_ca"].shape == caj["vis"].shape == caj["ir"].shape == (n, 3, H, W)


def test_caj_views_give_each_partner_its_view_geometry_and_erasing_but_not_its_colour_operations():
    torch.manual_seed(1)
    n = 200
    images = torch.rand(2 * n, 3, H, W) * 0.9 + 0.05
    partners = torch.rand(2 * n, 3, H, W) * 0.9 + 0.05
    visible = torch.arange(2 * n) < n
    # no crop, every image mirrored: the geometry is known, erasing and colour operations are not
    views, pair = CajViews((H, W), pad=0, flip_p=1.0, erasing_p=0.5)(images, visible, partners)
    fill = torch.tensor(CAJ_ERASE_FILL).view(1, 3, 1, 1)
    for name, rows in (("vis", slice(0, n)), ("vis_ca", slice(0, n)), ("ir", slice(n, 2 * n))):
        expected = imagenet_normalize(partners[rows]).flip(-1)
        erased = (pair[name] != expected).any(dim=1)  # (n, H, W): where the partner was erased
        assert torch.isclose(pair[name], fill.expand_as(pair[name]))[erased.unsqueeze(1).expand_as(pair[name])].all()
        assert 0.3 * n < int(erased.flatten(1).any(1).sum()) < 0.7 * n  # erasing p = 0.5
        image = imagenet_normalize(images[rows]).flip(-1)
        if name == "vis":  # the plain view's image: the same rectangle erased, nothing else changed
            assert torch.equal(views[name] != image, erased.unsqueeze(1).expand_as(image))
    equal = lambda x: ((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).flatten(1).all(1)
    assert equal(views["vis_ca"]).all() and not equal(pair["vis_ca"]).any()  # the exchange is the image's only
    with pytest.raises(ValueError, match="partners"):
        CajViews((H, W))(images, visible, partners[:, :, :8])


def test_view_rows_and_per_view_rows_spread_labels_as_cajs_batch():
    inputs = {"vis": torch.zeros(3, 1), "vis_ca": torch.zeros(3, 1), "ir": torch.zeros(2, 1)}
    rows = view_rows(inputs, torch.device("cpu"))
    assert rows.tolist() == [0, 1, 2, 0, 1, 2, 3, 4]  # cat(y_vis, y_vis, y_ir), train_ext.py
    labels, is_ir = torch.tensor([7, 8, 9, 7, 9]), torch.tensor([False, False, False, True, True])
    out_labels, out_ir = per_view_rows(labels, is_ir, {"logits": torch.zeros(8, 4), "row_index": rows})
    assert out_labels.tolist() == [7, 8, 9, 7, 8, 9, 7, 9] and out_ir.tolist() == [False] * 6 + [True] * 2
    same = per_view_rows(labels, is_ir, {"logits": torch.zeros(5, 4)})
    assert same[0] is labels and same[1] is is_ir
    with pytest.raises(ValueError, match="row_index"):
        per_view_rows(labels, is_ir, {"logits": torch.zeros(8, 4)})
    with pytest.raises(ValueError, match="same images"):
        view_rows({"vis": torch.zeros(3, 1), "vis_ca": torch.zeros(2, 1)}, torch.device("cpu"))


def test_adp_clamp_is_the_papers_parameter():
    labels = torch.tensor([0, 0, 1, 1])
    x = torch.tensor([[0.0], [20.0], [1.0], [19.0]])  # (fp - cn)^2 > 300 for every anchor
    assert adp_triplet_loss(x, labels, clamp=88.0)[0].item() == pytest.approx(88.0, abs=1e-4)  # CAJ
    assert adp_triplet_loss(x, labels, clamp=44.0)[0].item() == pytest.approx(44.0, abs=1e-4)  # GLMN
    assert CAJ_ADP == {"alpha": 1.0, "gamma": 1.0, "square": True, "clamp": 88.0}


def test_agw_caj_loss_is_ce_plus_cajs_adp_on_the_three_views():
    torch.manual_seed(2)
    cfg = _tiny(views="caj", triplet="adp", erasing_p=0.5)
    model = AGWNet(cfg, num_classes=3).train()
    recipe = cfg.fusion.recipe("agw")
    inputs = {"vis": torch.randn(4, 3, 32, 16), "vis_ca": torch.randn(4, 3, 32, 16), "ir": torch.randn(4, 3, 32, 16)}
    out = model(inputs)
    assert out["logits"].shape == (12, 3) and out["row_index"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7]
    labels = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    is_ir = torch.arange(8) >= 4
    losses = agw_loss(out, labels, is_ir, recipe)
    full = labels[out["row_index"]]
    expected_adp = adp_triplet_loss(out["feat_pre_bn"], full, 1.0, 1.0, True, clamp=88.0)[0]
    expected_id = torch.nn.functional.cross_entropy(out["logits"].float(), full)
    assert set(losses) == {"id", "adp", "total", "acc"}
    assert losses["adp"].item() == pytest.approx(expected_adp.item(), rel=1e-6)
    assert losses["total"].item() == pytest.approx((expected_id + expected_adp).item(), rel=1e-5)
    # AGW's own loss on the same rows is WRT
    assert set(agw_loss(out, labels, is_ir, _tiny().fusion.recipe("agw"))) == {"id", "wrt", "total", "acc"}


def test_caj_modifier_on_agw_and_tsme_and_refused_elsewhere():
    from common.errors import UserError
    from pipelines.ablate import parse_variant

    assert parse_variant("agw-caj").overrides == {"fusion": {"recipes": {"agw": {"views": "caj", "triplet": "adp", "erasing_p": 0.5}}}}
    assert parse_variant("tsme-caj").overrides == {"fusion": {"recipes": {"tsme": {"views": "caj", "erasing_p": 0.5}}}}
    assert parse_variant("tsme-caj").stage1_modifiers == ()  # shares TSME's stage 1
    with pytest.raises(UserError, match="caj"):
        parse_variant("glmn-caj")
    with pytest.raises(UserError, match="views"):
        load_config("demo", overrides={"fusion": {"recipes": {"agw": {"views": "double"}}}})
    with pytest.raises(UserError, match="triplet"):
        load_config("demo", overrides={"fusion": {"recipes": {"agw": {"triplet": "hard"}}}})


@pytest.mark.parametrize("method", ["agw", "tsme"])
def test_caj_views_train_one_epoch(method, sysu_tree, tmp_path):
    from pipelines.data import load_splits
    from pipelines.partners import PartnerSource
    from pipelines.stages import train_reid_stage

    recipes = {**TINY_OVERRIDES["fusion"]["recipes"]}
    recipes[method] = {**recipes[method], "views": "caj", "erasing_p": 0.5, "epochs": 1, "eval_every": 0}
    cfg = load_config("demo", overrides={**TINY_OVERRIDES, "fusion": {**TINY_OVERRIDES["fusion"], "recipes": recipes}})
    splits = load_splits(cfg, "sysu", sysu_tree, with_test=False)
    source = PartnerSource.gray() if method == "tsme" else None
    reid = train_reid_stage(cfg, method, splits, source, tmp_path / "run", torch.device("cpu"))
    state = torch.load(reid, weights_only=False)
    assert state["config"]["fusion"]["recipes"][method]["views"] == "caj"
