import numpy as np
import pytest

from common.errors import UserError
from common.samplers import IdentitySampler


def _split(counts_vis, counts_ir):
    pids, is_ir = [], []
    for pid, (nv, ni) in enumerate(zip(counts_vis, counts_ir), start=100):
        pids += [pid] * (nv + ni)
        is_ir += [False] * nv + [True] * ni
    return np.array(pids), np.array(is_ir)


def test_batch_composition_p_by_k_by_two_modalities():
    pids, is_ir = _split([6] * 10, [4] * 10)
    sampler = IdentitySampler(pids, is_ir, ids_per_batch=4, images_per_id=3)
    assert len(sampler) == 60 // 12  # floor(max(#vis, #ir) / (P*K))
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
    assert r0 == a[0::2] and r1 == a[1::2]


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
