"""Tests for common.evaluation.protocols: SYSU-MM01 queries, galleries (AGW's exact random draw and
the official rand_perm_cam.mat draw), multi-shot, the camera-3/camera-2 ignore rule end to
end, RegDB and LLCM trials, and the ProtocolSpec dispatcher."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from common.evaluation.metrics import evaluate_ranking
from common.evaluation.protocols import (
    SYSU_INDOOR_VISIBLE_CAMS,
    SYSU_VISIBLE_CAMS,
    ProtocolSpec,
    Family,
    llcm_trials,
    protocol_trials,
    regdb_trials,
    sysu_gallery,
    sysu_ignore_mask,
    sysu_official_trials,
    sysu_query,
    sysu_trials,
)

REAL_SPLITS = Path("/work/shared/data/sysu_mm01_splits")

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


def test_ignore_mask_equals_broadcast_rule_and_trials_share_it():
    rng = np.random.default_rng(3)
    q_cams, g_cams = rng.choice([3, 6], 40), rng.choice([1, 2, 4, 5], 30)
    expected = (q_cams == 3)[:, None] & (g_cams == 2)[None, :]
    np.testing.assert_array_equal(sysu_ignore_mask(q_cams, g_cams), expected)
    assert sysu_ignore_mask(np.zeros(0, np.int64), g_cams).shape == (0, 30)
    # Single-shot draws visit the same (identity, camera) pairs in the same order, so
    # every trial's mask is the same array (read-only views of it).
    pids, cams, _ = tiny_split()
    trials = sysu_trials(pids, cams, num_trials=3)
    assert all(np.shares_memory(t.ignore, trials[0].ignore) for t in trials)
    assert not trials[1].ignore.flags.writeable


# --------------------------------------------------------------------------- official SYSU

# Official protocol, tiny split: identities 2 and 5. Sorted by (pid, cam, file name) the
# split indices are:
#   pid 2: cam1 files 0003, 0007, 0009 -> 0, 1, 2 (numbers are NOT positions)
#          cam2 0001, 0002 -> 3, 4;  cam3 0001, 0002 -> 5, 6
#          cam4 0001..0012 -> 7..18 (file n at 6 + n);  cam6 0001 -> 19
#   pid 5: cam1 0001 -> 20;  cam3 0001 -> 21;  cam5 0001..0004 -> 22..25 (n at 21 + n)
#          cam6 0001, 0002 -> 26, 27
OFFICIAL_FILES = {
    (2, 1): [3, 7, 9], (2, 2): [1, 2], (2, 3): [1, 2], (2, 4): list(range(1, 13)), (2, 6): [1],
    (5, 1): [1], (5, 3): [1], (5, 5): [1, 2, 3, 4], (5, 6): [1, 2],
}
# rand_perm_cam{cam}{pid}: rows = trials (2 here, 10 in the real file), entries = file numbers.
OFFICIAL_PERMS = {
    (1, 2): [[7, 3, 9], [9, 7, 3]], (1, 5): [[1], [1]],
    (1, 7): [[2, 1], [1, 2]],  # identity 7 is not in the test split: ignored, as MATLAB does
    (2, 2): [[2, 1], [1, 2]],
    (3, 2): [[1, 2], [2, 1]], (3, 5): [[1], [1]],
    (4, 2): [[5, 12, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11], list(range(12, 0, -1))],
    (5, 5): [[3, 1, 4, 2], [2, 4, 1, 3]],
    (6, 2): [[1], [1]], (6, 5): [[2, 1], [1, 2]],
}
# Hand-worked galleries: camera by camera (1, 2, 4, 5), identity by identity, the first
# `shots` entries of row `trial`, mapped from file number to split index.
OFFICIAL_EXPECTED = {
    ("all", 1, 0): [1, 20, 4, 11, 24],
    ("all", 1, 1): [2, 20, 3, 18, 23],
    ("indoor", 1, 0): [1, 20, 4],
    ("indoor", 1, 1): [2, 20, 3],
    ("all", 10, 0): [1, 0, 2, 20, 4, 3, 11, 18, 7, 8, 9, 10, 12, 13, 14, 15, 24, 22, 25, 23],
    ("all", 10, 1): [2, 1, 0, 20, 3, 4, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 23, 25, 22, 24],
    ("indoor", 10, 0): [1, 0, 2, 20, 4, 3],
    ("indoor", 10, 1): [2, 1, 0, 20, 3, 4],
}


def official_split(files=OFFICIAL_FILES):
    """pids, cams, file numbers sorted by (pid, cam, file number)."""
    rows = sorted((pid, cam, n) for (pid, cam), numbers in files.items() for n in numbers)
    return tuple(np.array(col, dtype=np.int64) for col in zip(*rows))


def write_perm_file(path, perms=OFFICIAL_PERMS, num_ids=8, num_trials=2):
    """A rand_perm_cam.mat in the real file's layout: a (6, 1) cell of (num_ids, 1) cells of
    uint8 (trials, n) matrices, (trials, 0) where empty."""
    savemat = pytest.importorskip("scipy.io").savemat
    cameras = np.empty((6, 1), dtype=object)
    for cam in range(1, 7):
        cell = np.empty((num_ids, 1), dtype=object)
        for pid in range(1, num_ids + 1):
            rows = perms.get((cam, pid))
            cell[pid - 1, 0] = (
                np.array(rows, dtype=np.uint8) if rows else np.zeros((num_trials, 0), np.uint8)
            )
        cameras[cam - 1, 0] = cell
    savemat(str(path), {"rand_perm_cam": cameras})
    return path


@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("shots", [1, 10])
def test_official_gallery_hand_worked(tmp_path, mode, shots):
    perm = write_perm_file(tmp_path / "rand_perm_cam.mat")
    pids, cams, numbers = official_split()
    trials = sysu_official_trials(pids, cams, numbers, perm, mode=mode, shots=shots, num_trials=2)
    assert [t.index for t in trials] == [0, 1]
    for t in trials:
        assert t.gallery.tolist() == OFFICIAL_EXPECTED[(mode, shots, t.index)]
        assert t.query.tolist() == [5, 6, 19, 21, 26, 27]  # every infrared image, unpermuted
        np.testing.assert_array_equal(t.ignore, sysu_ignore_mask(cams[t.query], cams[t.gallery]))
    # The file number decides, not the position: trial 0 picks 0007.jpg, the 2nd file.
    assert numbers[trials[0].gallery[0]] == 7 and cams[trials[0].gallery[0]] == 1


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_official_protocol_through_the_dispatcher(tmp_path, mode):
    perm = write_perm_file(tmp_path / "rand_perm_cam.mat")
    pids, cams, numbers = official_split()
    is_ir = np.isin(cams, (3, 6))
    spec = ProtocolSpec(Family.SYSU_MM01, mode=mode, shots=10, protocol="official", perm_file=str(perm), num_trials=2)
    trials = protocol_trials(spec, pids, cams, is_ir, numbers)
    assert [t.gallery.tolist() for t in trials] == [
        OFFICIAL_EXPECTED[(mode, 10, 0)], OFFICIAL_EXPECTED[(mode, 10, 1)]
    ]
    with pytest.raises(ValueError, match="file_numbers"):
        protocol_trials(spec, pids, cams, is_ir)


def _edited(files, drop=(), add=None, rename=None):
    """A copy of ``files`` without the pairs ``drop``, with ``add``, and with
    ``rename = (pair, old number, new number)`` applied."""
    files = {k: list(v) for k, v in files.items() if k not in drop}
    files.update(add or {})
    if rename:
        pair, old, new = rename
        files[pair] = [new if n == old else n for n in files[pair]]
    return files


@pytest.mark.parametrize(
    "files, message",
    [
        (_edited(OFFICIAL_FILES, add={(5, 2): [1]}), "no permutation for camera 2, identity 5"),
        (_edited(OFFICIAL_FILES, drop=[(5, 5)]), "a permutation but no test images for camera 5"),
        (_edited(OFFICIAL_FILES, rename=((2, 1), 7, 8)), "picks file number 7 of camera 1, identity 2"),
    ],
    ids=["pair-without-permutation", "permutation-without-images", "missing-file-number"],
)
def test_official_split_mismatch_is_a_user_error(tmp_path, files, message):
    perm = write_perm_file(tmp_path / "rand_perm_cam.mat")
    pids, cams, numbers = official_split(files)
    with pytest.raises(UserError, match=message) as info:
        sysu_official_trials(pids, cams, numbers, perm, num_trials=2)
    assert str(perm) in str(info.value)


def test_official_perm_file_problems(tmp_path, monkeypatch):
    pids, cams, numbers = official_split()
    missing = tmp_path / "nowhere" / "rand_perm_cam.mat"
    with pytest.raises(UserError, match="not found") as info:
        sysu_official_trials(pids, cams, numbers, missing)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(UserError, match="could not be read") as info:
        sysu_official_trials(pids, cams, numbers, garbage)
    assert str(garbage) in str(info.value) and "\n" not in str(info.value)
    other = tmp_path / "other.mat"
    pytest.importorskip("scipy.io").savemat(str(other), {"something_else": np.ones(3)})
    with pytest.raises(UserError, match="not a SYSU-MM01 permutation file"):
        sysu_official_trials(pids, cams, numbers, other)
    perm = write_perm_file(tmp_path / "rand_perm_cam.mat")  # 2 trials per permutation
    with pytest.raises(UserError, match="has 2 trials"):
        sysu_official_trials(pids, cams, numbers, perm, num_trials=3)
    dup = numbers.copy()
    dup[1] = 3  # two files numbered 0003 in camera 1 of identity 2
    with pytest.raises(ValueError, match="file number 3"):
        sysu_official_trials(pids, cams, dup, perm, num_trials=2)
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import fails as if not installed
    with pytest.raises(UserError, match="needs scipy: pip install scipy"):
        sysu_official_trials(pids, cams, numbers, perm, num_trials=2)


def real_official_split():
    """A synthetic test split in the real file's shape: the 96 ids of test_id.mat, and for
    each (id, camera) with a permutation of length n, files numbered 1..n."""
    loadmat = pytest.importorskip("scipy.io").loadmat
    perm_path, ids_path = REAL_SPLITS / "rand_perm_cam.mat", REAL_SPLITS / "test_id.mat"
    if not (perm_path.is_file() and ids_path.is_file()):
        pytest.skip(f"the official SYSU-MM01 split files are not in {REAL_SPLITS}")
    cells = loadmat(str(perm_path))["rand_perm_cam"]
    ids = sorted(loadmat(str(ids_path))["id"].ravel().tolist())
    perms, files = {}, {}
    for cam in range(1, 7):
        per_id = cells[cam - 1, 0]
        for pid in ids:
            entry = per_id[pid - 1, 0] if pid <= per_id.shape[0] else np.zeros((0, 0))
            if entry.size:
                perms[(cam, pid)] = entry.astype(np.int64)
                files[(pid, cam)] = list(range(1, entry.shape[1] + 1))
    return perm_path, ids, perms, official_split(files)


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_official_real_perm_file_gallery_sizes(mode):
    perm_path, ids, perms, (pids, cams, numbers) = real_official_split()
    assert len(ids) == 96
    cameras = SYSU_VISIBLE_CAMS if mode == "all" else SYSU_INDOOR_VISIBLE_CAMS
    pairs = sorted((cam, pid) for (cam, pid) in perms if cam in cameras)
    single = sysu_official_trials(pids, cams, numbers, perm_path, mode=mode, shots=1)
    multi = sysu_official_trials(pids, cams, numbers, perm_path, mode=mode, shots=10)
    assert len(single) == len(multi) == 10
    # The well-known SYSU-MM01 test statistics: 3803 queries; 301 (all) / 112 (indoor)
    # single-shot gallery images, ten times as many multi-shot (every n >= 13 here).
    assert single[0].query.size == 3803
    assert len(pairs) == {"all": 301, "indoor": 112}[mode]
    for s_trial, m_trial in zip(single, multi):
        assert s_trial.gallery.size == len(pairs)  # ids x cameras present
        assert m_trial.gallery.size == 10 * len(pairs)
        got = list(zip(cams[s_trial.gallery].tolist(), pids[s_trial.gallery].tolist()))
        assert got == pairs  # one image per pair, camera-major as get_testing_set.m
        picked = numbers[s_trial.gallery]
        assert picked.tolist() == [perms[p][s_trial.index, 0] for p in pairs]
    assert not np.array_equal(numbers[single[0].gallery], numbers[single[1].gallery])


# --------------------------------------------------------------------------- RegDB

def test_regdb_trial_membership_both_directions():
    pids = np.array([1, 1, 2, 2, 1, 2, 2], dtype=np.int64)
    is_ir = np.array([False, True, False, True, True, False, True])
    (v2i,) = regdb_trials(pids, is_ir, direction="v2i")
    (i2v,) = regdb_trials(pids, is_ir, direction="i2v")
    assert v2i.index == 0 and v2i.ignore is None and i2v.ignore is None
    assert v2i.query.tolist() == [0, 2, 5] and v2i.gallery.tolist() == [1, 3, 4, 6]
    assert i2v.query.tolist() == [1, 3, 4, 6] and i2v.gallery.tolist() == [0, 2, 5]
    assert Family.REGDB.collapses_ids is False
    # The dispatcher: one trial whatever num_trials says (one trained model per split).
    trials = protocol_trials(ProtocolSpec(Family.REGDB, direction="v2i"), pids, pids * 0 + 1, is_ir)
    assert len(trials) == 1 and trials[0].query.tolist() == [0, 2, 5]
    with pytest.raises(ValueError, match="direction"):
        regdb_trials(pids, is_ir, direction="t2v")
    with pytest.raises(ValueError, match="no infrared images"):
        regdb_trials(pids, np.zeros(7, bool), direction="v2i")


# --------------------------------------------------------------------------- LLCM

# LLCM tiny split: images per (pid, modality, physical camera). Cameras are shared by the
# modalities; the infrared side has camera 3 only for pid 1, the visible side camera 3 for
# pid 4 only.
LLCM_COUNTS = {
    1: {"vis": {1: 3, 2: 2}, "nir": {1: 2, 3: 4}},
    4: {"vis": {2: 1, 3: 5, 4: 2}, "nir": {2: 3, 4: 1}},
    6: {"vis": {1: 2}, "nir": {1: 1, 2: 2, 4: 3}},
}


def llcm_split():
    """pids, cams, is_ir, names; sorted by (pid, cam, name) as the dataset reader does."""
    rows = sorted(
        (pid, cam, f"{mod}_{n:04d}.jpg", mod == "nir")
        for pid, by_mod in LLCM_COUNTS.items()
        for mod, by_cam in by_mod.items()
        for cam, count in by_cam.items()
        for n in range(1, count + 1)
    )
    pids = np.array([r[0] for r in rows], dtype=np.int64)
    cams = np.array([r[1] for r in rows], dtype=np.int64)
    return pids, cams, np.array([r[3] for r in rows]), [f"{r[2][:3]}/cam{r[1]}/{r[0]:04d}/{r[2]}" for r in rows]


def llcm_reference_gallery(names, modality, trial):
    """process_gallery_llcm, literally: random.seed(trial); ids sorted; cameras of the
    modality ascending; skip absent folders; random.choice(sorted files)."""
    random.seed(trial)
    chosen = []
    for pid in sorted(LLCM_COUNTS):
        for cam in range(1, 10):
            files = sorted(n for n in names if n.startswith(f"{modality}/cam{cam}/{pid:04d}/"))
            if files:
                chosen.append(random.choice(files))
    return chosen


@pytest.mark.parametrize("direction, gallery_mod", [("v2i", "nir"), ("i2v", "vis")])
def test_llcm_trials_draw_mask_and_directions(keep_global_random_state, direction, gallery_mod):
    pids, cams, is_ir, names = llcm_split()
    index_of = {n: i for i, n in enumerate(names)}
    trials = llcm_trials(pids, cams, is_ir, direction=direction, num_trials=10)
    query_ir = direction == "i2v"
    for t in trials:
        np.testing.assert_array_equal(t.query, np.flatnonzero(is_ir == query_ir))
        expected = [index_of[n] for n in llcm_reference_gallery(names, gallery_mod, t.index)]
        assert t.gallery.tolist() == expected
        # one image per (identity, camera) of the gallery modality, in visiting order
        pairs = list(zip(pids[t.gallery].tolist(), cams[t.gallery].tolist()))
        assert pairs == [(p, c) for p in sorted(LLCM_COUNTS) for c in sorted(LLCM_COUNTS[p][gallery_mod])]
        assert np.all(is_ir[t.gallery] != query_ir)
        # removal: same identity AND same physical camera, across the modalities
        same = (pids[t.query][:, None] == pids[t.gallery]) & (cams[t.query][:, None] == cams[t.gallery])
        np.testing.assert_array_equal(t.ignore, same)
    # same trial, same draw; the trials differ
    again = llcm_trials(pids, cams, is_ir, direction=direction, num_trials=10)
    assert [t.gallery.tolist() for t in again] == [t.gallery.tolist() for t in trials]
    assert len({tuple(t.gallery.tolist()) for t in trials}) > 1
    assert Family.LLCM.collapses_ids is True


def test_llcm_mask_hand_worked():
    pids, cams, is_ir, names = llcm_split()
    (trial,) = llcm_trials(pids, cams, is_ir, direction="i2v", num_trials=1)
    q = {names[i]: k for k, i in enumerate(trial.query)}
    g = {(int(pids[i]), int(cams[i])): k for k, i in enumerate(trial.gallery)}
    # pid 1's infrared camera-1 query drops pid 1's visible camera-1 image only
    row = trial.ignore[q["nir/cam1/0001/nir_0001.jpg"]]
    assert row[g[(1, 1)]] and row.sum() == 1
    assert not trial.ignore[q["nir/cam3/0001/nir_0001.jpg"]].any()  # no visible cam 3 for pid 1
    assert trial.ignore[q["nir/cam2/0004/nir_0002.jpg"], g[(4, 2)]]
    assert not trial.ignore[q["nir/cam1/0006/nir_0001.jpg"], g[(1, 1)]]  # other identity


# --------------------------------------------------------------------------- dispatcher

def test_dispatcher_matches_the_protocol_functions(tmp_path):
    pids, cams, _ = tiny_split()
    is_ir = np.isin(cams, (3, 6))
    for title in ("", "demo (SYSU-MM01 protocol)"):
        spec = ProtocolSpec(Family.SYSU_MM01, mode="indoor", shots=10, num_trials=3, title=title)
        got = protocol_trials(spec, pids, cams, is_ir)
        want = sysu_trials(pids, cams, mode="indoor", shots=10, num_trials=3)
        assert [t.gallery.tolist() for t in got] == [t.gallery.tolist() for t in want]
        assert spec.family.collapses_ids is True
    lp, lc, lir, _ = llcm_split()
    got = protocol_trials(ProtocolSpec(Family.LLCM, direction="v2i", num_trials=4), lp, lc, lir)
    want = llcm_trials(lp, lc, lir, direction="v2i", num_trials=4)
    assert [t.gallery.tolist() for t in got] == [t.gallery.tolist() for t in want]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"family": "market"}, "family must be a protocols.Family"),
        ({"family": Family.REGDB, "protocol": "official", "perm_file": "p.mat"}, "SYSU-MM01 only, not RegDB"),
        ({"family": Family.LLCM, "protocol": "official"}, "SYSU-MM01 only, not LLCM"),
        ({"family": Family.LLCM, "shots": 10}, "shots must be 1"),
        ({"family": Family.REGDB, "mode": "indoor"}, "SYSU-MM01 only"),
        ({"family": Family.LLCM, "direction": "t2v"}, "direction must be one of"),
        ({"family": Family.SYSU_MM01, "direction": "v2i"}, "SYSU-MM01 queries are infrared"),
        ({"family": Family.SYSU_MM01, "shots": 5}, "1 \\(single-shot\\) or 10"),
        ({"family": Family.SYSU_MM01, "protocol": "official"}, "needs perm_file"),
        ({"family": Family.SYSU_MM01, "perm_file": "p.mat"}, "protocol='official' only"),
        ({"family": Family.SYSU_MM01, "protocol": "agw"}, "protocol must be one of"),
        ({"family": Family.SYSU_MM01, "mode": "outdoor"}, "mode must be one of"),
        ({"family": Family.LLCM, "num_trials": 0}, "num_trials"),
        ({"family": Family.SYSU_MM01, "shots": True}, "shots"),
    ],
)
def test_invalid_protocol_specs_raise_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        ProtocolSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_dispatcher_and_collapse_argument_errors():
    pids, cams, _ = tiny_split()
    with pytest.raises(ValueError, match="ProtocolSpec"):
        protocol_trials("sysu", pids, cams, np.isin(cams, (3, 6)))
    with pytest.raises(ValueError, match="is_ir"):
        protocol_trials(ProtocolSpec(Family.SYSU_MM01), pids, cams, np.isin(cams, (3, 6)).astype(int))
    with pytest.raises(ValueError, match="is_ir"):
        protocol_trials(ProtocolSpec(Family.SYSU_MM01), pids, cams, np.zeros(3, bool))


@pytest.mark.parametrize(
    "spec, text",
    [
        (ProtocolSpec(Family.SYSU_MM01), "SYSU-MM01 all-search single-shot, 10 trials (AGW random gallery), infrared query -> visible gallery"),
        (ProtocolSpec(Family.SYSU_MM01, mode="indoor", shots=10, protocol="official", perm_file="x/rand_perm_cam.mat"),
         "SYSU-MM01 indoor-search multi-shot (10 images), 10 trials (official rand_perm_cam.mat gallery), infrared query -> visible gallery"),
        (ProtocolSpec(Family.REGDB, direction="v2i"), "RegDB, 1 trial (whole test split, no removal), visible query -> infrared gallery"),
        (ProtocolSpec(Family.LLCM, num_trials=1), "LLCM, 1 trial (random gallery: 1 image per identity and camera, same-identity same-camera removal), infrared query -> visible gallery"),
    ],
)
def test_describe(spec, text):
    assert spec.describe() == text
