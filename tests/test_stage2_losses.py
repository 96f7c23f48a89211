import math

import pytest
import torch

from stage2_fusion.losses import hetero_centre_loss, pairwise_euclidean, wrt_loss


def test_wrt_matches_hand_computation_on_two_ids_by_two():
    # 1-D features 0, 1 (id 0) and 3, 4 (id 1). By symmetry anchors 0/3 and 1/2 agree.
    # Anchor 0: positives at d = 1e-6 (itself, sqrt of the 1e-12 clamp) and 1:
    #   w+ = softmax(d) -> furthest positive fp = (1e-6 e^(1e-6-1) + 1) / (e^(1e-6-1) + 1 + 1e-6) = 0.731058
    #   negatives at 3, 4: w- = softmax(-d) -> cn = (3 e^-3 + 4 e^-4) / (e^-3 + e^-4 + 1e-6) = 3.268893
    #   loss = log(1 + exp(fp - cn)) = 0.076069
    # Anchor 1: same fp; negatives at 2, 3 -> cn = 2.268929, loss = 0.194611
    # mean over the four anchors = (0.076069 + 0.194611) / 2 = 0.135340
    x = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    loss, correct = wrt_loss(x, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(0.135340, abs=1e-5)
    assert correct.item() == 4


def test_wrt_is_invariant_to_batch_order_and_drops_when_ids_separate():
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    perm = torch.randperm(8)
    assert wrt_loss(x, y)[0].item() == pytest.approx(wrt_loss(x[perm], y[perm])[0].item(), rel=1e-6)
    separated = x * 0.01 + 10 * torch.nn.functional.one_hot(y, 5).float()
    assert wrt_loss(separated, y)[0] < 1e-3 < wrt_loss(x, y)[0]


def test_pairwise_euclidean():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = pairwise_euclidean(x)
    assert d[0, 1].item() == pytest.approx(5.0) and d[0, 0].item() == pytest.approx(1e-6)


def test_hetero_centre_hand_computation():
    # id 0: visible [1,0], [0,1] -> centre (0.5, 0.5); infrared [1,1] -> ||.||^2 = 0.5
    # id 1: visible [2,0]; infrared [0,0], [0,2] -> centre (0, 1); ||(2, -1)||^2 = 5
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 0, 1, 1])
    is_ir = torch.tensor([False, False, False, True, True, True])
    assert hetero_centre_loss(emb, labels, is_ir).item() == pytest.approx(5.5)
    # an identity seen in one modality only contributes nothing
    labels2 = torch.tensor([0, 0, 2, 0, 1, 1])
    assert hetero_centre_loss(emb, labels2, is_ir).item() == pytest.approx(0.5)


def test_identity_loss_by_hand():
    # logits (0, ln 3) for label 1: CE = -log(3 / (1 + 3)) = log(4 / 3) = 0.287682
    from stage2_fusion.losses import identity_loss

    assert identity_loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])).item() == pytest.approx(0.287682, abs=1e-6)


def test_agw_loss_is_id_on_logits_plus_wrt_on_the_pre_bn_feature():
    from stage2_fusion.methods import load_config
    from stage2_fusion.methods.agw import agw_loss

    recipe = load_config("paper").fusion.recipe("agw")  # id 1, wrt 1, no hetero-centre term
    outputs = {
        "feat_pre_bn": torch.tensor([[0.0], [1.0], [3.0], [4.0]]),  # WRT = 0.135340 (hand-worked above)
        "feat_post_bn": torch.tensor([[5.0], [0.0], [1.0], [2.0]]),  # WRT here would be ~2.1
        "logits": torch.zeros(4, 2),  # CE = log 2 = 0.693147, every prediction class 0
    }
    losses = agw_loss(outputs, torch.tensor([0, 0, 1, 1]), torch.tensor([False, True, False, True]), recipe)
    assert losses["wrt"].item() == pytest.approx(0.135340, abs=1e-5)
    assert losses["id"].item() == pytest.approx(0.693147, abs=1e-6)
    assert losses["total"].item() == pytest.approx(0.828487, abs=1e-5)
    assert losses["acc"].item() == pytest.approx(0.5)
    assert "hc" not in losses


def test_tsme_loss_sums_heads_of_id_plus_half_hetero_centre_on_normalised_embeddings():
    from stage2_fusion.methods import load_config
    from stage2_fusion.methods.tsme import tsme_loss

    recipe = load_config("paper").fusion.recipe("tsme")  # id 1, hc 0.5, no WRT
    labels = torch.tensor([0, 1, 0, 1])
    is_ir = torch.tensor([False, False, True, True])
    # head 1: rows (2, 0), (0, 3) visible, (0, 1), (0, 5) infrared -> L2-normalised (1,0), (0,1), (0,1), (0,1):
    #   id 0: ||(1,0) - (0,1)||^2 = 2, id 1: 0 -> HC 2 (unnormalised it would be 5 + 4 = 9)
    # head 2: (1,1), (1,-1), (1,1), (-1,1) -> id 0: 0, id 1: ||(0.7071,-0.7071) - (-0.7071,0.7071)||^2 = 4
    embeddings = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [0.0, 5.0]],
                               [[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    logits = torch.zeros(2, 4, 2)  # CE log 2 per head
    logits[1, :, 1] = math.log(3.0)  # head 2 predicts class 1 with p = 3/4: CE = (log 4 + log(4/3)) / 2 = 0.836988
    losses = tsme_loss({"embeddings": embeddings, "logits": logits, "feat_pre_bn": torch.zeros(4, 3)}, labels, is_ir, recipe)
    assert losses["hc"].item() == pytest.approx(6.0, abs=1e-5)
    assert losses["id"].item() == pytest.approx(0.693147 + 0.836988, abs=1e-5)
    assert losses["total"].item() == pytest.approx(0.693147 + 0.836988 + 0.5 * 6.0, abs=1e-5)
    assert "wrt" not in losses
    # accuracy of the first (fused) head: all-zero logits predict class 0 -> 2 of 4 right
    assert losses["acc"].item() == pytest.approx(0.5)


def test_wrt_counts_ties_as_correct_and_stays_finite_at_large_distances():
    # all features equal: furthest positive = closest negative = 0 for every anchor; AGW counts
    # `closest_negative >= furthest_positive` as correct, so all 4 anchors count
    loss, correct = wrt_loss(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]))
    assert int(correct) == 4
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)  # softplus(0)
    # positives 60 apart: the softmax weights are shifted by the row maximum (AGW), so exp never
    # overflows; anchor 0: fp ~ 60, cn ~ 1 -> loss ~ softplus(59) ~ 59 (averaged over anchors)
    loss, _ = wrt_loss(torch.tensor([[0.0], [60.0], [1.0], [61.0]]), torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(loss) and loss.item() > 50.0


def test_agw_loss_adds_the_hetero_centre_term_on_the_l2_normalised_post_bn_feature():
    import dataclasses

    from stage2_fusion.methods import load_config
    from stage2_fusion.methods.agw import agw_loss

    recipe = dataclasses.replace(load_config("paper").fusion.recipe("agw"), hc_weight=0.5)
    # post-BN rows (2,0) vis / (0,3) ir of id 0 and (1,1) vis / (-1,1) ir of id 1; normalised:
    # id 0 ||(1,0) - (0,1)||^2 = 2, id 1 ||(.7071,.7071) - (-.7071,.7071)||^2 = 2 -> HC 4
    # (unnormalised it would be 13 + 4 = 17)
    outputs = {"feat_pre_bn": torch.zeros(4, 1), "feat_post_bn": torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, 1.0]]),
               "logits": torch.zeros(4, 2)}
    losses = agw_loss(outputs, torch.tensor([0, 0, 1, 1]), torch.tensor([False, True, False, True]), recipe)
    assert losses["hc"].item() == pytest.approx(4.0, abs=1e-5)
    assert losses["total"].item() == pytest.approx(losses["id"].item() + losses["wrt"].item() + 0.5 * 4.0, abs=1e-5)


def test_tsme_loss_adds_the_edge_loss_and_wrt_when_the_recipe_asks_and_reports_head_one_accuracy():
    import dataclasses

    from stage2_fusion.methods import load_config
    from stage2_fusion.methods.tsme import tsme_loss

    recipe = dataclasses.replace(load_config("paper").fusion.recipe("tsme"), hc_weight=0.0, wrt_weight=2.0, pef_weight=3.0)
    labels = torch.tensor([0, 0, 0, 1])
    logits = torch.zeros(1, 4, 2)  # every row predicts class 0: 3 of 4 right
    outputs = {"embeddings": torch.ones(1, 4, 2), "logits": logits, "pef": torch.tensor(0.25),
               "feat_pre_bn": torch.tensor([[0.0], [1.0], [3.0], [4.0]])}
    losses = tsme_loss(outputs, labels, torch.tensor([False, True, False, True]), recipe)
    wrt, _ = wrt_loss(outputs["feat_pre_bn"], labels)
    assert losses["pef"].item() == pytest.approx(0.25)
    assert losses["wrt"].item() == pytest.approx(wrt.item())
    assert losses["total"].item() == pytest.approx(math.log(2.0) + 3.0 * 0.25 + 2.0 * wrt.item(), abs=1e-5)
    assert losses["acc"].item() == pytest.approx(0.75)
