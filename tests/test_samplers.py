import numpy as np
import pytest

from common.errors import UserError
from common.data.samplers import IdentitySampler


def _split(counts_vis, counts_ir):
    pids, is_ir = [], []
    for pid, (nv, ni) in enumerate(zip(counts_vis, counts_ir), start=100):
        pids += [pid] * (nv + ni)
        is_ir += [False] * nv + [True] * ni
    return np.array(pids), np.array(is_ir)


def test_batch_composition_p_by_k_by_two_modalities():
    pids, is_ir = _split([6] * 10, [4] * 10)
    sampler = IdentitySampler(pids, is_ir, ids_per_batch=4, images_per_id=3)
    assert len(sampler) == 60 // 12 + 1  # int(max(#vis, #ir) / (P*K)) + 1, as AGW
    for batch in sampler.epoch(seed=0):
        assert len(batch.vis) == len(batch.ir) == len(batch.labels) == 12
        assert not is_ir[batch.vis].any() and is_ir[batch.ir].all()
        # identity-major, same identity order in both halves, labels match images
        assert np.array_equal(sampler.class_pids[batch.labels], pids[batch.vis])
        assert np.array_equal(pids[batch.vis], pids[batch.ir])
        assert len(np.unique(batch.labels)) == 4 and np.array_equal(batch.labels, np.repeat(batch.labels[::3], 3))


def test_without_replacement_draws_distinct_images_and_falls_back_for_small_ids():
    pids, is_ir = _split([5, 5, 2, 5], [5, 1, 5, 5])  # pid 101 has 1 IR image, 102 has 2 visible
    sampler = IdentitySampler(pids, is_ir, ids_per_batch=4, images_per_id=3, replace=False, steps_per_epoch=20)
    for batch in sampler.epoch(seed=1):
        for half in (batch.vis, batch.ir):
            for k in range(4):
                group = half[3 * k : 3 * k + 3]
                n_avail = np.sum((pids == pids[group[0]]) & (is_ir == is_ir[group[0]]))
                if n_avail >= 3:
                    assert len(set(group.tolist())) == 3
                else:
                    assert set(group.tolist()) <= set(np.flatnonzero((pids == pids[group[0]]) & (is_ir == is_ir[group[0]])).tolist())


def test_same_seed_same_epoch_and_ranks_partition_the_epoch():
    pids, is_ir = _split([4] * 8, [4] * 8)
    a = [b.vis.tolist() for b in IdentitySampler(pids, is_ir, 2, 2).epoch(5)]
    b = [b.vis.tolist() for b in IdentitySampler(pids, is_ir, 2, 2).epoch(5)]
    c = [b.vis.tolist() for b in IdentitySampler(pids, is_ir, 2, 2).epoch(6)]
    assert a == b and a != c
    r0 = [b.vis.tolist() for b in IdentitySampler(pids, is_ir, 2, 2, rank=0, world_size=2).epoch(5)]
    r1 = [b.vis.tolist() for b in IdentitySampler(pids, is_ir, 2, 2, rank=1, world_size=2).epoch(5)]
    steps = len(r0)  # int(32 / 4) + 1 = 9 steps; each rank takes int(9 / 2) = 4
    assert steps == len(r1) == 4 and len(a) == 9
    assert r0 == a[0 : 2 * steps : 2] and r1 == a[1 : 2 * steps : 2]


def test_identities_missing_a_modality_are_left_out_and_too_few_ids_refused():
    pids, is_ir = _split([3, 3, 3], [3, 0, 3])
    sampler = IdentitySampler(pids, is_ir, 2, 2)
    assert sampler.class_pids.tolist() == [100, 102]
    with pytest.raises(UserError, match="only 2 training identities"):
        IdentitySampler(pids, is_ir, 3, 2)


def test_every_rank_takes_the_same_number_of_steps():
    pids, is_ir = _split([4] * 8, [4] * 8)
    for steps in (1, 3, 5):
        lengths = []
        for rank in range(2):
            sampler = IdentitySampler(pids, is_ir, 2, 2, steps_per_epoch=steps, rank=rank, world_size=2)
            lengths.append(len(list(sampler.epoch(0))))
            assert lengths[-1] == len(sampler)
        assert lengths[0] == lengths[1] == max(1, steps // 2)


def test_steps_per_epoch_as_agw_runs_them_696_on_sysu():
    # AGW utils.py IdentitySampler: for j in range(int(N / (batchSize * num_pos)) + 1), N = max(#RGB, #IR);
    # SYSU-MM01 train + val: 22,258 visible and 11,909 infrared images -> int(22258 / 32) + 1 = 696
    n_ids = 395
    vis_per_id = np.full(n_ids, 22258 // n_ids)
    vis_per_id[: 22258 - vis_per_id.sum()] += 1
    ir_per_id = np.full(n_ids, 11909 // n_ids)
    ir_per_id[: 11909 - ir_per_id.sum()] += 1
    pids, is_ir = _split(vis_per_id.tolist(), ir_per_id.tolist())
    assert (~is_ir).sum() == 22258 and is_ir.sum() == 11909
    assert len(IdentitySampler(pids, is_ir, 8, 4)) == 696
    assert len(IdentitySampler(pids, is_ir, 4, 6)) == 22258 // 24 + 1 == 928
    # an exact multiple still gets the extra step: int(64 / 32) + 1 = 3
    pids, is_ir = _split([8] * 8, [2] * 8)
    assert len(IdentitySampler(pids, is_ir, 8, 4)) == 3


def test_every_identity_shorter_than_k_falls_back_to_replacement():
    # the TSME recipe's K = 6 on a copy where every identity has fewer infrared images than 6
    pids, is_ir = _split([8, 7, 9, 6], [2, 3, 1, 5])
    sampler = IdentitySampler(pids, is_ir, ids_per_batch=4, images_per_id=6, replace=False, steps_per_epoch=10)
    for batch in sampler.epoch(seed=3):
        assert batch.vis.shape == batch.ir.shape == (24,)
        for k in range(4):
            vis, ir = batch.vis[6 * k : 6 * k + 6], batch.ir[6 * k : 6 * k + 6]
            assert len(set(vis.tolist())) == 6  # >= 6 visible images each: still without replacement
            pid = pids[vis[0]]
            assert (pids[ir] == pid).all() and is_ir[ir].all()  # infrared: with replacement, same identity
    # and with one identity wide enough, the short ones still fall back
    pids, is_ir = _split([6, 6], [9, 1])
    batch = next(IdentitySampler(pids, is_ir, 2, 6, replace=False).epoch(0))
    short = batch.ir[batch.labels == 1]
    assert len(short) == 6 and len(set(short.tolist())) == 1


def test_with_replacement_repeats_images_and_without_never_does():
    # identities holding exactly K images: drawing K with replacement repeats one with
    # probability 1 - K!/K^K = 0.906 for K = 4, so 50 draws without a repeat would be a bug
    pids, is_ir = _split([4] * 6, [4] * 6)
    with_r = IdentitySampler(pids, is_ir, 3, 4, replace=True, steps_per_epoch=50)
    without = IdentitySampler(pids, is_ir, 3, 4, replace=False, steps_per_epoch=50)
    repeats = lambda s: sum(len(set(b.vis[4 * k : 4 * k + 4].tolist())) < 4 for b in s.epoch(0) for k in range(3))
    assert repeats(with_r) > 100 and repeats(without) == 0


def test_recipes_choose_replacement_as_the_papers():
    from common.data.array_cache import ArraySplit
    from stage2_fusion.methods import load_config
    from stage2_fusion.train import build_sampler

    pids, is_ir = _split([6] * 8, [6] * 8)
    split = ArraySplit(images=np.zeros((len(pids), 2, 2, 3), np.uint8), pids=pids, cams=np.ones_like(pids), is_ir=is_ir, fingerprint="x")
    cfg = load_config("paper")
    assert build_sampler(cfg.fusion.recipe("agw"), split).replace is True  # AGW: np.random.choice(..., num_pos)
    assert build_sampler(cfg.fusion.recipe("tsme"), split).replace is False  # TSME: without replacement
    agw = build_sampler(cfg.fusion.recipe("agw"), split)
    assert (agw.p, agw.k) == (8, 4)
    tsme = build_sampler(cfg.fusion.recipe("tsme"), split)
    assert (tsme.p, tsme.k) == (4, 6)


def test_mscmnet_and_glmn_batches():
    from common.data.array_cache import ArraySplit
    from stage2_fusion.methods import load_config
    from stage2_fusion.train import build_sampler

    pids, is_ir = _split([5] * 10, [5] * 10)
    split = ArraySplit(images=np.zeros((len(pids), 2, 2, 3), np.uint8), pids=pids, cams=np.ones_like(pids), is_ir=is_ir, fingerprint="x")
    cfg = load_config("paper")
    mscmnet = build_sampler(cfg.fusion.recipe("mscmnet"), split)  # utils.py: 6 ids x 4, images with replacement
    assert (mscmnet.p, mscmnet.k, mscmnet.replace) == (6, 4, True) and len(mscmnet) == 50 // 24 + 1
    glmn = build_sampler(cfg.fusion.recipe("glmn"), split)  # p4_n8: 8 ids x 4, with replacement (AGW's sampler)
    assert (glmn.p, glmn.k, glmn.replace) == (8, 4, True)


def test_k_larger_than_every_identity_holds_is_refused():
    pids, is_ir = _split([3, 2, 3], [1, 3, 2])  # at most 3 images of a modality
    assert len(IdentitySampler(pids, is_ir, 2, 3, replace=False)) >= 1
    with pytest.raises(UserError, match=r"images_per_id \(K\) = 4 but no training identity has more than 3 images"):
        IdentitySampler(pids, is_ir, 2, 4, replace=True)
