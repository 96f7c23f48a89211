"""Tests for common.protocols: SYSU-MM01 queries, galleries (AGW's exact random draw),
multi-shot, and the camera-3/camera-2 ignore rule end to end."""

from __future__ import annotations

import random

import numpy as np
import pytest

from common.metrics import evaluate_ranking
from common.protocols import (
    SYSU_INDOOR_VISIBLE_CAMS,
    SYSU_VISIBLE_CAMS,
    sysu_gallery,
    sysu_ignore_mask,
    sysu_query,
    sysu_trials,
)

# Images per (pid, cam); missing pairs have no images. pid 7 has no camera 2 or 3, pid 8 no
# camera 4 or 6, pid 3 no camera 5; pid 3 camera 1 has more than 10 images (multi-shot cap).
COUNTS = {
    3: {1: 12, 2: 3, 3: 2, 4: 1, 6: 4},
    7: {1: 2, 4: 5, 5: 11, 6: 1},
    8: {1: 1, 2: 4, 3: 3, 5: 2},
}


def tiny_split():
    """pids, cams and file names, sorted by (pid, cam, file name) as the dataset reader does."""
    pids, cams, names = [], [], []
    for pid in sorted(COUNTS):
        for cam in sorted(COUNTS[pid]):
            for n in range(1, COUNTS[pid][cam] + 1):
                pids.append(pid)
                cams.append(cam)
                names.append(f"cam{cam}/{pid:04d}/{n:04d}.jpg")
    return np.array(pids, dtype=np.int64), np.array(cams, dtype=np.int64), names


def agw_reference_gallery(names, ids, cameras, trial, shots=1):
    """AGW's process_gallery_sysu draw, literally: global random.seed(trial), ids in sorted
    order, cameras in order, skip absent folders, random.choice(sorted(files)); for
    multi-shot the same loop with random.sample(files, min(shots, len(files)))."""
    random.seed(trial)
    chosen = []
    for pid in sorted(ids):
        for cam in cameras:
            new_files = sorted(n for n in names if n.startswith(f"cam{cam}/{pid:04d}/"))
            if not new_files:  # AGW: os.path.isdir(img_dir) is False
                continue
            if shots == 1:
                chosen.append(random.choice(new_files))
            else:
                chosen.extend(random.sample(new_files, min(shots, len(new_files))))
    return chosen


@pytest.fixture
def keep_global_random_state():
    state = random.getstate()
    yield
    random.setstate(state)


def test_query_is_every_infrared_image_in_both_modes():
    pids, cams, _ = tiny_split()
    query = sysu_query(pids, cams)
    assert query.dtype == np.int64
    np.testing.assert_array_equal(query, np.flatnonzero((cams == 3) | (cams == 6)))
    assert sorted(zip(pids[query].tolist(), cams[query].tolist())) == sorted(
        (pid, cam) for pid in COUNTS for cam in COUNTS[pid] if cam in (3, 6)
        for _ in range(COUNTS[pid][cam])
    )


@pytest.mark.parametrize(
    "mode, cameras", [("all", SYSU_VISIBLE_CAMS), ("indoor", SYSU_INDOOR_VISIBLE_CAMS)]
)
def test_single_shot_gallery_has_one_image_per_identity_and_visible_camera(mode, cameras):
    pids, cams, _ = tiny_split()
    gallery = sysu_gallery(pids, cams, mode=mode, trial=0)
    pairs = list(zip(pids[gallery].tolist(), cams[gallery].tolist()))
    expected = [(pid, cam) for pid in sorted(COUNTS) for cam in cameras if cam in COUNTS[pid]]
    assert pairs == expected  # AGW's visiting order, one image each, absent pairs skipped
    assert gallery.dtype == np.int64


def test_multi_shot_gallery_takes_up_to_ten_distinct_images():
    pids, cams, _ = tiny_split()
    gallery = sysu_gallery(pids, cams, mode="all", trial=4, shots=10)
    assert len(set(gallery.tolist())) == gallery.size
    for pid in COUNTS:
        for cam in SYSU_VISIBLE_CAMS:
            drawn = gallery[(pids[gallery] == pid) & (cams[gallery] == cam)]
            assert drawn.size == min(10, COUNTS[pid].get(cam, 0))
    assert np.sum((pids[gallery] == 3) & (cams[gallery] == 1)) == 10  # 12 images, capped


def test_draw_is_deterministic_per_trial_and_varies_across_trials():
    pids, cams, _ = tiny_split()
    for shots in (1, 10):
        first = sysu_gallery(pids, cams, trial=3, shots=shots)
        np.testing.assert_array_equal(first, sysu_gallery(pids, cams, trial=3, shots=shots))
        draws = {tuple(sysu_gallery(pids, cams, trial=t, shots=shots).tolist()) for t in range(10)}
        assert len(draws) > 1


@pytest.mark.parametrize("mode, cameras", [("all", (1, 2, 4, 5)), ("indoor", (1, 2))])
@pytest.mark.parametrize("shots", [1, 10])
def test_gallery_equals_agw_draw_exactly(keep_global_random_state, mode, cameras, shots):
    pids, cams, names = tiny_split()
    index_of = {name: i for i, name in enumerate(names)}
    for trial in range(10):
        expected = [index_of[n] for n in agw_reference_gallery(names, COUNTS, cameras, trial, shots)]
        assert sysu_gallery(pids, cams, mode=mode, trial=trial, shots=shots).tolist() == expected


def test_gallery_leaves_the_global_random_state_alone(keep_global_random_state):
    pids, cams, _ = tiny_split()
    random.seed(123)
    sysu_gallery(pids, cams, trial=5)
    after = random.random()
    random.seed(123)
    assert after == random.random()


def test_ignore_mask_cam3_queries_drop_every_cam2_gallery_image():
    mask = sysu_ignore_mask(np.array([3, 6, 3]), np.array([1, 2, 4, 2, 5]))
    np.testing.assert_array_equal(
        mask,
        [[False, True, False, True, False], [False] * 5, [False, True, False, True, False]],
    )


def test_cam3_rule_changes_rank1_end_to_end():
    # Two pid-1 queries, from camera 3 and camera 6. Gallery: [pid 2 cam 2 at distance 0.1,
    # pid 1 cam 1 at 0.2]. The camera-3 query drops the camera-2 image, so its first item is
    # its match (Rank-1 hit, AP 1); the camera-6 query keeps it (Rank-1 miss, AP 1/2).
    # With the rule: Rank-1 = 1/2, mAP = 3/4. Without it: Rank-1 = 0, mAP = 1/2.
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    q_pids, g_pids = np.array([1, 1]), np.array([2, 1])
    ignore = sysu_ignore_mask(np.array([3, 6]), np.array([2, 1]))
    with_rule = evaluate_ranking(dist, q_pids, g_pids, ignore=ignore, max_rank=2)
    without = evaluate_ranking(dist, q_pids, g_pids, max_rank=2)
    assert with_rule.rank1 == 0.5 and with_rule.mean_ap == pytest.approx(0.75)
    assert without.rank1 == 0.0 and without.mean_ap == pytest.approx(0.5)


def test_trials_bundle_query_gallery_and_mask():
    pids, cams, _ = tiny_split()
    trials = sysu_trials(pids, cams, mode="indoor", shots=10, num_trials=10)
    assert [t.index for t in trials] == list(range(10))
    for t in trials:
        np.testing.assert_array_equal(t.query, sysu_query(pids, cams))
        expected = sysu_gallery(pids, cams, mode="indoor", trial=t.index, shots=10)
        np.testing.assert_array_equal(t.gallery, expected)
        np.testing.assert_array_equal(t.ignore, sysu_ignore_mask(cams[t.query], cams[t.gallery]))
        assert t.ignore.shape == (t.query.size, t.gallery.size)
        with pytest.raises(ValueError):
            t.gallery[0] = 0  # read-only


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "outdoor"}, {"mode": None}, {"shots": 0}, {"shots": 1.5}, {"shots": True}, {"trial": -1}],
)
def test_invalid_gallery_arguments_raise(kwargs):
    pids, cams, _ = tiny_split()
    with pytest.raises(ValueError):
        sysu_gallery(pids, cams, **kwargs)


def test_invalid_split_arrays_raise():
    with pytest.raises(ValueError):
        sysu_query(np.array([1, 2]), np.array([3]))
    with pytest.raises(ValueError):
        sysu_gallery(np.array([1.0]), np.array([1]))
    with pytest.raises(ValueError):
        sysu_trials(np.array([1]), np.array([1]), num_trials=0)
