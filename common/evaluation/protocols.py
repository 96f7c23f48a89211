"""Query/gallery construction of the cross-modality test protocols, and their removal rules.

Every function works on the arrays of a TEST split, sorted by (identity, camera, file
name) as the dataset readers guarantee (``common.datasets.base``): ``pids`` (int64),
``cams`` (int64, the dataset's camera numbers), ``is_ir`` (bool) and, for the official
SYSU-MM01 protocol, ``file_numbers`` (int64, the number in each file name). A protocol
yields :class:`Trial` objects (query indices, gallery indices, ignore mask) to feed
``common.evaluation.metrics.evaluate_ranking``; :func:`protocol_trials` dispatches on a
:class:`ProtocolSpec`, :func:`collapse_ids_for` says whether the CMC collapses repeated
gallery identities.

SYSU-MM01 (:attr:`Family.SYSU_MM01`; the demo dataset runs the same protocol)
------------------------------------------------------------------------
The test split has 96 identities seen by four visible cameras (1, 2 indoor; 4, 5 outdoor)
and two infrared cameras (3 indoor, 6 outdoor). As run by the AGW baseline (repo
``mangye16/Cross-Modal-Re-ID-baseline``, ``data_manager.py``: ``process_query_sysu``,
``process_gallery_sysu``; ``test.py``) and by the official MATLAB code (repo
``wuancong/SYSU-MM01``, ``evaluation/evaluation_SYSU_MM01.m``, ``get_testing_set.m``):

* **query** = every infrared test image (cameras 3 and 6), in both search modes; the
  official code does not restrict the queries either (its permutations pick gallery images
  only);
* **gallery** = per trial, one image (single-shot) or ten (multi-shot) per (identity,
  visible camera): cameras 1, 2, 4, 5 in *all-search*, 1, 2 in *indoor-search*;
* 10 trials, results averaged;
* camera 3 stands in the same room as camera 2 (``cam_id = [1 2 2 4 5 6]`` in the MATLAB
  code, whose same-camera removal therefore drops every camera-2 gallery image for a
  camera-3 probe, whatever its identity); AGW's ``eval_sysu`` writes the same rule out.
  Both SYSU protocols use it (:func:`sysu_ignore_mask`);
* the CMC collapses repeated gallery identities (``get_cmc_multi_cam.m``,
  ``unique(..., 'stable')``; AGW ``eval_sysu``).

Two ways to draw the galleries:

* ``protocol="random"`` (:func:`sysu_trials`), AGW's draw. AGW visits identities in
  ascending order and, inside, the cameras in the order above, skipping (identity, camera)
  pairs without images, and appends ``random.choice(sorted file list)`` after
  ``random.seed(trial)``. :func:`sysu_gallery` reproduces that stream exactly with a
  private ``random.Random(trial)`` (the global generator is never touched). Note: in the
  stored copy of AGW's root ``data_manager.py`` (commit c667a1af) the
  ``random.seed(trial)`` line is commented out, leaving the draw to whatever state the
  global generator is in; the same function seeds it in ``mangye16/DDAG``
  (``data_manager.py``, 7ecefeb), in AGW's ``PAMI23_Supervised/data_manager.py``
  (e817a26) and in ``ZYK100/LLCM`` (``DEEN/data_manager.py``). We reproduce the seeded
  draw. AGW has no multi-shot draw; the ``gall_mode='multi'`` variant of the TSME code
  (repo ``jnLreID/Revisiting-Modality-specific-Feature-Compensation-for-Visible-Infrared-
  Person-Re-Identification``, ``data_manager.py``, 99bc54c) calls
  ``np.random.choice(new_files, 10, replace=False)`` on NumPy's unseeded global generator
  (not a function of the trial, and failing for a camera with fewer than 10 images). We
  therefore use, from the same per-trial stream, ``random.sample(sorted files,
  min(shots, n_files))`` per (identity, camera).
* ``protocol="official"`` (:func:`sysu_official_trials`), the fixed draws of the MATLAB
  code, read from ``rand_perm_cam.mat`` (``evaluation/data_split/``). See that function.

RegDB (``"regdb"``, :func:`regdb_trials`)
-----------------------------------------
One trial per trained model (RegDB's 10 splits each train their own model): the test
images of the query modality against ALL test images of the other, no removal, no
collapse. AGW ``test.py`` (``process_test_regdb`` for both modalities; default visible
query -> thermal gallery, ``--tvsearch`` swaps the roles) and ``eval_metrics.py``
``eval_regdb`` (its removal compares query camera 1 with gallery camera 2, so it never
removes anything; its CMC is the plain one).

LLCM (``"llcm"``, :func:`llcm_trials`)
--------------------------------------
Repo ``ZYK100/LLCM`` (``DEEN/data_manager.py``: ``process_query_llcm``,
``process_gallery_llcm``; ``DEEN/test.py``, ``AGW/test.py``; ``AGW/eval_metrics.py``
``eval_llcm``; the same functions in ``Hua-XC/MSCMNet``):

* query = every test image of the query modality (``process_query_llcm``);
* gallery = per trial, ``random.seed(trial)``, then for each identity (ascending) and
  each camera of the other modality (ascending: ``test_vis/cam1..cam9``,
  ``test_nir/cam1, cam2, cam4..cam9``) with images, ``random.choice(sorted files)``: one
  image per (identity, camera); 10 trials averaged;
* removal: gallery images with the query's identity AND camera (``eval_llcm``). LLCM's
  camera numbers are physical cameras shared by both modalities (camera 1 films in visible
  light by day and near-infrared by night), so this removes the same-camera images of the
  other modality;
* the CMC collapses repeated identities (``eval_llcm`` returns the ``np.unique`` CMC, as
  ``eval_sysu``).

Directions: ``test_mode = [1, 2]`` (the default) extracts the query with the infrared
branch and the gallery with the visible one: "IR to VIS" (``i2v``). For
``test_mode = [2, 1]`` ("VIS to IR" in the comment) the code draws the gallery from the
infrared images but then calls ``eval_llcm`` with the two sets swapped (``-distmat`` of
gallery x query, ``gall_label`` as query labels), i.e. evaluates the one-per-camera
infrared draw as queries against all visible images. We implement ``v2i`` as the comment
and the paper describe it (visible queries, one infrared image per identity and camera as
gallery), like the ``v2t``/``t2v`` modes of later LLCM loaders (``process_query_llcm``
with ``mode='v2t'``: RGB query, NIR gallery).
"""

from __future__ import annotations

import enum

import random
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from common.errors import UserError
from common.evaluation.metrics import same_camera_mask

__all__ = [
    "DIRECTIONS",
    "Family",
    "PROTOCOLS",
    "ProtocolSpec",
    "SYSU_INDOOR_VISIBLE_CAMS",
    "SYSU_INFRARED_CAMS",
    "SYSU_MODES",
    "SYSU_VISIBLE_CAMS",
    "Trial",
    "llcm_trials",
    "protocol_trials",
    "regdb_trials",
    "sysu_gallery",
    "sysu_ignore_mask",
    "sysu_official_trials",
    "sysu_query",
    "sysu_trials",
]

SYSU_VISIBLE_CAMS: tuple[int, ...] = (1, 2, 4, 5)
SYSU_INFRARED_CAMS: tuple[int, ...] = (3, 6)
SYSU_INDOOR_VISIBLE_CAMS: tuple[int, ...] = (1, 2)
#: Gallery cameras of each search mode, in AGW's (and the MATLAB code's) order (read-only).
SYSU_MODES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"all": SYSU_VISIBLE_CAMS, "indoor": SYSU_INDOOR_VISIBLE_CAMS}
)
#: Search directions: visible query -> infrared gallery, or the reverse.
DIRECTIONS: tuple[str, ...] = ("v2i", "i2v")
#: SYSU-MM01 gallery draws: AGW's seeded random draw, or the official permutation file.
PROTOCOLS: tuple[str, ...] = ("random", "official")

# The camera-3 queries ignore the camera-2 gallery (same room).
_SYSU_IGNORE_QUERY_CAM = 3
_SYSU_IGNORE_GALLERY_CAM = 2
# Packing of (camera, identity, file number) into one int64 key (official protocol).
_KEY_BITS = 24


class Family(enum.Enum):
    """The protocol families implemented here; a dataset's spec names its family
    (:attr:`common.datasets.base.DatasetSpec.protocol`). The value is the name results use."""

    SYSU_MM01 = "SYSU-MM01"
    REGDB = "RegDB"
    LLCM = "LLCM"

    @property
    def collapses_ids(self) -> bool:
        """Whether the CMC collapses repeated gallery identities: SYSU-MM01 yes
        (``get_cmc_multi_cam.m``; AGW ``eval_sysu``), LLCM yes (``ZYK100/LLCM`` ``eval_llcm``
        returns the collapsed CMC), RegDB no (AGW ``eval_regdb``). Pass it as
        ``evaluate_ranking(..., collapse_repeated_ids=)``."""
        return self is not Family.REGDB

    @property
    def directions(self) -> tuple[str, ...]:
        """Search directions it has: SYSU-MM01 queries are infrared (``"i2v"``) only."""
        return ("i2v",) if self is Family.SYSU_MM01 else DIRECTIONS

    @property
    def samples_gallery(self) -> bool:
        """Whether a trial's gallery is a random draw from the test pool (SYSU-MM01, LLCM)."""
        return self is not Family.REGDB


@dataclass(frozen=True, eq=False)
class Trial:
    """One evaluation trial: which test-split samples are queries and gallery.

    Attributes:
        index: trial number, ``>= 0`` (the random seed of a random gallery draw; the row of
            the official permutation file; 0 for RegDB).
        query: int64 array ``(Q,)`` of indices into the test split, read-only.
        gallery: int64 array ``(G,)`` of indices into the test split, in draw order,
            read-only.
        ignore: ``(Q, G)`` bool array, ``True`` where a gallery item is removed from that
            query's ranking (pass it to ``evaluate_ranking(..., ignore=...)``), or ``None``.
            Read-only; trials whose galleries have the same identities and cameras in the
            same order share one mask.
    """

    index: int
    query: np.ndarray
    gallery: np.ndarray
    ignore: np.ndarray | None

    def __post_init__(self) -> None:
        for name in ("query", "gallery", "ignore"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value)
                if value.flags.writeable:
                    value = value.view()
                    value.flags.writeable = False
                object.__setattr__(self, name, value)


@dataclass(frozen=True)
class ProtocolSpec:
    """Which test protocol to run (see the module docstring for each).

    Attributes:
        family: the protocol family (:class:`Family`).
        title: the dataset's name in :meth:`describe` (default: the family's, "SYSU-MM01").
        mode: SYSU-MM01 search mode, ``"all"`` or ``"indoor"``; must stay ``"all"``
            elsewhere.
        shots: SYSU-MM01 gallery images per (identity, camera), 1 (single-shot) or 10
            (multi-shot); must stay 1 elsewhere.
        direction: RegDB/LLCM ``"v2i"`` (visible query -> infrared gallery) or ``"i2v"``;
            SYSU-MM01 is always ``"i2v"`` (infrared queries).
        protocol: SYSU-MM01 galleries ``"random"`` (AGW's draws, seed = trial) or
            ``"official"`` (``rand_perm_cam.mat``); must stay ``"random"`` elsewhere.
        num_trials: SYSU-MM01 galleries / LLCM gallery draws, ``>= 1``. RegDB always has
            one trial (one trained model per split), whatever this says.
        perm_file: path of ``rand_perm_cam.mat``; required by, and only allowed with,
            ``protocol="official"``.

    Raises:
        ValueError: on an unknown value or an invalid combination (one line naming it).
    """

    family: Family
    mode: str = "all"
    shots: int = 1
    direction: str = "i2v"
    protocol: str = "random"
    num_trials: int = 10
    perm_file: str | None = None
    title: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.family, Family):
            raise ValueError(f"family must be a protocols.Family, got {self.family!r}")
        _choose("direction", self.direction, DIRECTIONS)
        _choose("protocol", self.protocol, PROTOCOLS)
        _choose("mode", self.mode, tuple(SYSU_MODES))
        _check_count("shots", self.shots, minimum=1)
        _check_count("num_trials", self.num_trials, minimum=1)
        if self.perm_file is not None and not isinstance(self.perm_file, (str, Path)):
            raise ValueError(f"perm_file must be a path or None, got {self.perm_file!r}")
        if self.family is Family.SYSU_MM01:
            if self.shots not in (1, 10):
                raise ValueError(
                    f"SYSU-MM01 shots must be 1 (single-shot) or 10 (multi-shot), got {self.shots}"
                )
            if self.direction != "i2v":
                raise ValueError("SYSU-MM01 queries are infrared: direction must be 'i2v'")
            if self.protocol == "official" and self.perm_file is None:
                raise ValueError("protocol='official' needs perm_file (the path of rand_perm_cam.mat)")
            if self.protocol == "random" and self.perm_file is not None:
                raise ValueError("perm_file is read by protocol='official' only; the random protocol draws its own galleries")
            return
        name = self.name
        if self.protocol != "random":
            raise ValueError(f"protocol='{self.protocol}' exists for SYSU-MM01 only, not {name}")
        if self.perm_file is not None:
            raise ValueError(f"perm_file is for the official SYSU-MM01 protocol, not {name}")
        if self.mode != "all":
            raise ValueError(f"search mode '{self.mode}' exists for SYSU-MM01 only, not {name}")
        if self.shots != 1:
            raise ValueError(f"{name} galleries have one image per identity and camera: shots must be 1, got {self.shots}")

    @property
    def name(self) -> str:
        """The dataset's name in descriptions: ``title``, or the family's."""
        return self.title or self.family.value

    @property
    def trial_count(self) -> int:
        """Number of trials :func:`protocol_trials` returns (RegDB: 1)."""
        return 1 if self.family is Family.REGDB else int(self.num_trials)

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``"SYSU-MM01 all-search single-shot, 10
        trials (AGW random gallery), infrared query -> visible gallery"``."""
        trials = f"{self.trial_count} trial{'s' if self.trial_count != 1 else ''}"
        direction = (
            "visible query -> infrared gallery"
            if self.direction == "v2i"
            else "infrared query -> visible gallery"
        )
        if self.family is Family.SYSU_MM01:
            shots = "single-shot" if self.shots == 1 else f"multi-shot ({self.shots} images)"
            source = (
                "AGW random gallery" if self.protocol == "random" else "official rand_perm_cam.mat gallery"
            )
            return f"{self.name} {self.mode}-search {shots}, {trials} ({source}), {direction}"
        if self.family is Family.REGDB:
            return f"{self.name}, {trials} (whole test split, no removal), {direction}"
        return (
            f"{self.name}, {trials} (random gallery: 1 image per identity and camera, "
            f"same-identity same-camera removal), {direction}"
        )


def protocol_trials(
    spec: ProtocolSpec,
    pids: np.ndarray,
    cams: np.ndarray,
    is_ir: np.ndarray,
    file_numbers: np.ndarray | None = None,
) -> list[Trial]:
    """The trials of ``spec`` on a test split.

    Args:
        spec: the protocol.
        pids: int64 ``(N,)`` identity of each test sample.
        cams: int64 ``(N,)`` camera of each sample.
        is_ir: bool ``(N,)``, ``True`` for infrared samples.
        file_numbers: int64 ``(N,)`` number in each file name (``0007.jpg`` -> 7); needed by
            the official SYSU-MM01 protocol only.

    Returns:
        ``spec.trial_count`` trials, ``index`` 0, 1, ...

    Raises:
        ValueError: on invalid arrays, or the official protocol without ``file_numbers``.
        UserError: official protocol whose permutation file is missing, unreadable, or does
            not describe this split.
    """
    if not isinstance(spec, ProtocolSpec):
        raise ValueError(f"spec must be a ProtocolSpec, got {type(spec).__name__}")
    pids, cams = _split_arrays(pids, cams)
    is_ir = _bool_vector("is_ir", is_ir, pids.size)
    if spec.family is Family.SYSU_MM01:
        if spec.protocol == "official":
            if file_numbers is None:
                raise ValueError("the official SYSU-MM01 protocol needs file_numbers (the number in each file name)")
            return sysu_official_trials(
                pids, cams, file_numbers, spec.perm_file,
                mode=spec.mode, shots=spec.shots, num_trials=spec.num_trials,
            )
        return sysu_trials(pids, cams, mode=spec.mode, shots=spec.shots, num_trials=spec.num_trials)
    if spec.family is Family.REGDB:
        return regdb_trials(pids, is_ir, direction=spec.direction)
    return llcm_trials(pids, cams, is_ir, direction=spec.direction, num_trials=spec.num_trials)


# --------------------------------------------------------------------------- SYSU-MM01


def sysu_query(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """Indices of the SYSU-MM01 queries: every infrared image (cameras 3 and 6).

    The same in all-search and indoor-search (AGW's ``process_query_sysu`` uses cameras 3
    and 6 in both modes; so does ``evaluation_SYSU_MM01.m``).

    Args:
        pids: ``(N,)`` integer identity of each test-split sample.
        cams: ``(N,)`` integer camera (1..6) of each sample.

    Returns:
        int64 array of indices in ascending order; for a split sorted by
        (identity, camera, file name) this is AGW's query order.

    Raises:
        ValueError: on non-1-D or non-integer inputs or mismatched lengths.
    """
    _, cams = _split_arrays(pids, cams)
    return np.flatnonzero(np.isin(cams, SYSU_INFRARED_CAMS)).astype(np.int64)


def sysu_gallery(
    pids: np.ndarray,
    cams: np.ndarray,
    *,
    mode: str = "all",
    trial: int = 0,
    shots: int = 1,
) -> np.ndarray:
    """Indices of one random SYSU-MM01 gallery (AGW's draw order and random stream).

    Visits the identities in ascending order and, for each, the visible cameras of ``mode``
    in the order (1, 2, 4, 5); skips (identity, camera) pairs without images; draws with a
    private ``random.Random(trial)``: ``choice(files)`` for ``shots == 1`` (exactly AGW's
    ``random.seed(trial)``; ``random.choice(sorted files)``), else
    ``sample(files, min(shots, len(files)))``. ``files`` is the pair's samples in split
    order, which is file-name order when the split is sorted by (identity, camera, file
    name), as the dataset reader guarantees.

    Args:
        pids: ``(N,)`` integer identity of each test-split sample.
        cams: ``(N,)`` integer camera (1..6) of each sample.
        mode: ``"all"`` (cameras 1, 2, 4, 5) or ``"indoor"`` (cameras 1, 2).
        trial: random seed of the draw, ``>= 0`` (AGW runs trials 0..9).
        shots: images per (identity, camera): 1 (single-shot) or e.g. 10 (multi-shot).

    Returns:
        int64 array of indices into the split, in draw order (one block per (identity,
        camera), blocks in visiting order; inside a multi-shot block, the order
        ``random.sample`` returns).

    Raises:
        ValueError: on an unknown ``mode``, ``shots < 1``, ``trial < 0``, non-integer
            ``shots``/``trial``, or invalid ``pids``/``cams``.
    """
    pids, cams = _split_arrays(pids, cams)
    cameras = _mode_cameras(mode)
    _check_count("shots", shots, minimum=1)
    _check_count("trial", trial, minimum=0)
    return _draw(_camera_groups(pids, cams, cameras), int(trial), int(shots))


def sysu_ignore_mask(q_cams: np.ndarray, g_cams: np.ndarray) -> np.ndarray:
    """SYSU-MM01's removal rule: camera-3 queries ignore every camera-2 gallery image.

    Cameras 2 (visible) and 3 (infrared) are in the same room; AGW's ``eval_sysu`` removes,
    for a query from camera 3, all gallery images from camera 2, whatever their identity;
    the official MATLAB code does the same through its camera labels (``cam_id = [1 2 2 4
    5 6]``, then ``get_cmc_multi_cam.m`` / ``get_map_multi_cam.m`` drop gallery samples
    with the probe's camera label). Other queries ignore nothing.

    Args:
        q_cams: ``(Q,)`` integer cameras of the queries.
        g_cams: ``(G,)`` integer cameras of the gallery.

    Returns:
        ``(Q, G)`` bool array, ``True`` = remove from that query's ranking.

    Raises:
        ValueError: on non-1-D or non-integer inputs.
    """
    q_cams = _int_vector("q_cams", q_cams)
    g_cams = _int_vector("g_cams", g_cams)
    # Filling the camera-3 rows of a zeroed array is much faster than a broadcast AND.
    mask = np.zeros((q_cams.size, g_cams.size), dtype=bool)
    mask[q_cams == _SYSU_IGNORE_QUERY_CAM] = g_cams == _SYSU_IGNORE_GALLERY_CAM
    return mask


def sysu_trials(
    pids: np.ndarray,
    cams: np.ndarray,
    *,
    mode: str = "all",
    shots: int = 1,
    num_trials: int = 10,
) -> list[Trial]:
    """The random SYSU-MM01 evaluation trials ``0..num_trials-1`` (AGW's draws).

    Args:
        pids: ``(N,)`` integer identity of each test-split sample.
        cams: ``(N,)`` integer camera (1..6) of each sample.
        mode: ``"all"`` or ``"indoor"``.
        shots: images per (identity, visible camera), ``>= 1`` (1 single-shot, 10
            multi-shot).
        num_trials: number of random galleries, ``>= 1`` (the protocol uses 10).

    Returns:
        One :class:`Trial` per trial, with ``trial.index = t``, the query of
        :func:`sysu_query` (shared, read-only), the gallery of
        ``sysu_gallery(..., trial=t)`` and the mask of :func:`sysu_ignore_mask`.

    Raises:
        ValueError: as :func:`sysu_gallery`, or on ``num_trials < 1``.
    """
    pids, cams = _split_arrays(pids, cams)
    cameras = _mode_cameras(mode)
    _check_count("shots", shots, minimum=1)
    _check_count("num_trials", num_trials, minimum=1)
    query = sysu_query(pids, cams)
    groups = _camera_groups(pids, cams, cameras)
    galleries = [_draw(groups, index, int(shots)) for index in range(int(num_trials))]
    return _bundle(query, galleries, lambda g: sysu_ignore_mask(cams[query], cams[g]), (cams,))


def sysu_official_trials(
    pids: np.ndarray,
    cams: np.ndarray,
    file_numbers: np.ndarray,
    perm_file: str | Path,
    *,
    mode: str = "all",
    shots: int = 1,
    num_trials: int = 10,
) -> list[Trial]:
    """The official SYSU-MM01 trials: galleries fixed by ``rand_perm_cam.mat``.

    What the MATLAB code does (repo ``wuancong/SYSU-MM01``, ``evaluation/``):
    ``rand_perm_cam{cam}{id}`` is a (10, n) matrix whose row ``run_time`` (trials 1..10)
    is a permutation of ``1..n``, n = the number of images of identity ``id`` (1-based cell
    index = the identity number) in camera ``cam``; an empty matrix where that pair has no
    images. ``get_testing_set.m`` takes, for trial ``run_time``, gallery camera by camera
    (``gallery_cam_list``: 1, 2, 4, 5 all-search; 1, 2 indoor) and test identity by test
    identity (ascending), the images ``rand_perm_this(1:number_shot)`` of
    ``feature_cam{cam}{id}``, i.e. the first ``number_shot`` entries of the row, in that
    order. The probes are every image of the test identities in cameras 3 and 6
    (``X_probe = X_test_this``, no permutation applied; pairs with an empty permutation are
    skipped, which only happens for pairs without images).

    Which image an entry names: ``feature{id}(i,:)`` is "the i-th image of id"
    (``demo.m``; the feature extraction is not part of the official code). The
    ``get_gallery_names`` helper that several public VI-ReID repositories use with
    ``eval_sysu(..., perm, ...)`` turns entry ``i`` into the file name
    ``cam{cam}/{id:04d}/{i:04d}``: the 4-digit number in the file name, which is what
    ``file_numbers`` holds and what we look up. (``InnovArul/SYSU_MM01_pythoneval``,
    linked from the official README, indexes the identity's feature list with ``i - 1``
    instead; the two agree because SYSU-MM01's files are numbered 0001..n in each folder.)

    Shots: ``evaluation_SYSU_MM01.m`` and ``demo.m`` say "1 for single shot, 10 for
    multi-shot"; the header of ``get_testing_set.m`` says "1 single shot, 5 multi-shot, -1
    all except one". The code takes whatever ``number_shot`` it is given; the Python ports
    above use 10, as do the papers. In the real file every non-empty permutation has
    n >= 13, so 10 shots never run short; for a pair with fewer images than ``shots`` we
    take all of them (MATLAB would fail on the index).

    Trial ``t`` (0-based) uses row ``t`` (MATLAB's ``run_time = t + 1``). The gallery is
    returned in the MATLAB order (camera, then identity, then permutation order), so that
    ties in distance break as MATLAB's stable ``sort`` breaks them. The camera-3/camera-2
    removal (:func:`sysu_ignore_mask`) is the official rule too.

    Args:
        pids: int64 ``(N,)`` identity of each test sample.
        cams: int64 ``(N,)`` camera (1..6) of each sample.
        file_numbers: int64 ``(N,)`` number in each file name (``0007.jpg`` -> 7), >= 1.
        perm_file: path of ``rand_perm_cam.mat``.
        mode: ``"all"`` or ``"indoor"``.
        shots: gallery images per (identity, visible camera), ``>= 1`` (1 or 10).
        num_trials: trials ``0..num_trials-1``, at most the rows of the file (10).

    Returns:
        One :class:`Trial` per trial: the queries of :func:`sysu_query`, the gallery above,
        the camera-3/camera-2 mask.

    Raises:
        ValueError: on invalid arrays or arguments, or two images of one (identity,
            camera) with the same file number.
        UserError: ``perm_file`` missing or unreadable (needs scipy), or not matching the
            split: a test (identity, camera) with images but no permutation or the
            reverse, a permutation naming a file number the split lacks, or fewer rows
            than ``num_trials``.
    """
    pids, cams = _split_arrays(pids, cams)
    if perm_file is None:
        raise ValueError("the official SYSU-MM01 protocol needs perm_file (the path of rand_perm_cam.mat)")
    numbers = _int_vector("file_numbers", file_numbers)
    if numbers.size != pids.size:
        raise ValueError(f"file_numbers has {numbers.size} entries but pids has {pids.size}")
    cameras = _mode_cameras(mode)
    _check_count("shots", shots, minimum=1)
    _check_count("num_trials", num_trials, minimum=1)
    limit = 1 << _KEY_BITS
    for name, values, low in (("pids", pids, 0), ("file_numbers", numbers, 1)):
        if values.size and (values.min() < low or values.max() >= limit):
            raise ValueError(f"{name} must lie in {low}..{limit - 1} for the official protocol")
    if cams.size and (cams.min() < 1 or cams.max() > 6):
        raise ValueError("SYSU-MM01 cameras are 1..6")
    path = Path(perm_file)
    perms = _read_perm_file(path)

    # Every test (identity, camera) with images needs a permutation, and the reverse.
    present = {(int(c), int(p)) for c, p in zip(cams.tolist(), pids.tolist())}
    for cam in sorted(set(cameras) | set(SYSU_INFRARED_CAMS)):
        for pid in np.unique(pids).tolist():
            has_perm = _perm_of(perms, cam, pid).shape[1] > 0
            if has_perm != ((cam, pid) in present):
                what = "no permutation for" if not has_perm else "a permutation but no test images for"
                raise UserError(
                    f"{path} has {what} camera {cam}, identity {pid}: it does not describe this test split"
                )

    # Sample index of each (camera, identity, file number).
    keys = (cams << (2 * _KEY_BITS)) | (pids << _KEY_BITS) | numbers
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if repeated.size:
        i = order[repeated[0]]
        raise ValueError(
            f"two test images of camera {cams[i]}, identity {pids[i]} have file number {numbers[i]}"
        )

    galleries = []
    for t in range(int(num_trials)):
        wanted = []
        for cam in cameras:
            for pid in np.unique(pids[cams == cam]).tolist():
                perm = _perm_of(perms, cam, pid)
                if perm.shape[0] <= t:
                    raise UserError(
                        f"{path} has {perm.shape[0]} trials for camera {cam}, identity {pid}; "
                        f"num_trials={num_trials} needs {num_trials}"
                    )
                picked = perm[t, : int(shots)]
                wanted.append((cam << (2 * _KEY_BITS)) | (pid << _KEY_BITS) | picked)
        wanted_keys = np.concatenate(wanted) if wanted else np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(sorted_keys, wanted_keys), max(keys.size - 1, 0))
        missing = np.flatnonzero(sorted_keys[pos] != wanted_keys) if keys.size else np.arange(wanted_keys.size)
        if missing.size:
            k = int(wanted_keys[missing[0]])
            raise UserError(
                f"{path} picks file number {k & (limit - 1)} of camera {k >> (2 * _KEY_BITS)}, "
                f"identity {(k >> _KEY_BITS) & (limit - 1)}, which the test split lacks: "
                "it does not describe this copy of the dataset"
            )
        galleries.append(order[pos].astype(np.int64))
    query = sysu_query(pids, cams)
    return _bundle(query, galleries, lambda g: sysu_ignore_mask(cams[query], cams[g]), (cams,))


# --------------------------------------------------------------------------- RegDB, LLCM


def regdb_trials(pids: np.ndarray, is_ir: np.ndarray, *, direction: str) -> list[Trial]:
    """The RegDB trial of one split: query modality against all of the other.

    Args:
        pids: int64 ``(N,)`` identity of each test sample (of one RegDB split).
        is_ir: bool ``(N,)``, ``True`` for thermal (infrared) samples.
        direction: ``"v2i"`` (visible query, thermal gallery: AGW's default) or ``"i2v"``
            (AGW's ``--tvsearch``).

    Returns:
        ``[Trial(index=0, query, gallery, ignore=None)]``: query = every test image of the
        query modality, gallery = every test image of the other, both in split order;
        nothing removed (AGW ``eval_regdb``). Evaluate with ``collapse_repeated_ids=False``.

    Raises:
        ValueError: on invalid arrays, an unknown direction, or a modality without images.
    """
    pids = _int_vector("pids", pids)
    is_ir = _bool_vector("is_ir", is_ir, pids.size)
    query_ir = _choose("direction", direction, DIRECTIONS) == "i2v"
    query, gallery = _modality_split(is_ir, query_ir)
    return [Trial(index=0, query=query, gallery=gallery, ignore=None)]


def llcm_trials(
    pids: np.ndarray,
    cams: np.ndarray,
    is_ir: np.ndarray,
    *,
    direction: str,
    num_trials: int = 10,
) -> list[Trial]:
    """The LLCM trials ``0..num_trials-1``: all query-modality images against one random
    image per (identity, camera) of the other modality.

    The draw of trial ``t`` is ``ZYK100/LLCM`` ``process_gallery_llcm``'s: a private
    ``random.Random(t)`` (as ``random.seed(t)``), identities ascending, cameras of the
    gallery modality ascending, pairs without images skipped, ``choice(files)`` with the
    pair's files in split (file-name) order. The mask removes gallery images with the
    query's identity and camera (``eval_llcm``; cameras are shared by the modalities).

    Args:
        pids: int64 ``(N,)`` identity of each test sample.
        cams: int64 ``(N,)`` physical camera (LLCM: 1..9) of each sample.
        is_ir: bool ``(N,)``, ``True`` for near-infrared samples.
        direction: ``"v2i"`` (visible queries, infrared gallery) or ``"i2v"`` (LLCM's
            default ``test_mode = [1, 2]``).
        num_trials: random galleries, ``>= 1`` (the protocol uses 10).

    Returns:
        One :class:`Trial` per trial (the mask is shared: every draw has the same
        identities and cameras in the same order). Evaluate with the collapsed CMC.

    Raises:
        ValueError: on invalid arrays or arguments, or a modality without images.
    """
    pids, cams = _split_arrays(pids, cams)
    is_ir = _bool_vector("is_ir", is_ir, pids.size)
    query_ir = _choose("direction", direction, DIRECTIONS) == "i2v"
    _check_count("num_trials", num_trials, minimum=1)
    query, candidates = _modality_split(is_ir, query_ir)
    gallery_side = is_ir != query_ir
    cameras = tuple(np.unique(cams[candidates]).tolist())
    groups = _camera_groups(pids, cams, cameras, among=gallery_side)
    galleries = [_draw(groups, index, 1) for index in range(int(num_trials))]

    def mask(gallery: np.ndarray) -> np.ndarray:
        return same_camera_mask(pids[query], pids[gallery], cams[query], cams[gallery])

    return _bundle(query, galleries, mask, (pids, cams))


# --------------------------------------------------------------------------- internals


def _choose(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def _int_vector(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _bool_vector(name: str, values: np.ndarray, length: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a 1-D bool array, got dtype {arr.dtype}, shape {arr.shape}")
    if arr.size != length:
        raise ValueError(f"{name} has {arr.size} entries, expected {length}")
    return arr


def _split_arrays(pids: np.ndarray, cams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pids = _int_vector("pids", pids)
    cams = _int_vector("cams", cams)
    if pids.size != cams.size:
        raise ValueError(f"pids has {pids.size} entries but cams has {cams.size}")
    return pids, cams


def _mode_cameras(mode: str) -> tuple[int, ...]:
    try:
        return SYSU_MODES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {sorted(SYSU_MODES)}, got {mode!r}") from None


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _modality_split(is_ir: np.ndarray, query_ir: bool) -> tuple[np.ndarray, np.ndarray]:
    """(query, other) indices: the samples of the query modality and of the other one."""
    query = np.flatnonzero(is_ir == query_ir).astype(np.int64)
    other = np.flatnonzero(is_ir != query_ir).astype(np.int64)
    for indices, ir in ((query, query_ir), (other, not query_ir)):
        if indices.size == 0:
            raise ValueError(f"the test split has no {'infrared' if ir else 'visible'} images")
    return query, other


def _camera_groups(
    pids: np.ndarray,
    cams: np.ndarray,
    cameras: tuple[int, ...],
    *,
    among: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Sample indices of every non-empty (identity, camera) pair, in AGW's visiting order.

    Pairs are ordered by ascending identity, then by the position of the camera in
    ``cameras``; inside a pair, indices keep their split order. ``among`` (bool mask)
    restricts the samples (LLCM: one modality). O(N log N), vectorised.
    """
    keep = np.isin(cams, cameras)
    if among is not None:
        keep &= among
    eligible = np.flatnonzero(keep)
    if eligible.size == 0:
        return []
    cam_rank = np.zeros(eligible.size, dtype=np.int64)
    for position, camera in enumerate(cameras):
        cam_rank[cams[eligible] == camera] = position
    order = np.lexsort((cam_rank, pids[eligible]))  # stable: split order inside a pair
    members = eligible[order]
    pid_sorted = pids[members]
    rank_sorted = cam_rank[order]
    starts = np.flatnonzero(
        (pid_sorted[1:] != pid_sorted[:-1]) | (rank_sorted[1:] != rank_sorted[:-1])
    ) + 1
    return np.split(members.astype(np.int64), starts)


def _draw(groups: list[np.ndarray], trial: int, shots: int) -> np.ndarray:
    """AGW's per-pair draw from ``random.Random(trial)`` (one Python call per pair)."""
    rng = random.Random(trial)
    picks: list[int] = []
    if shots == 1:
        for group in groups:
            picks.append(int(rng.choice(group)))
    else:
        for group in groups:
            files = group.tolist()
            picks.extend(rng.sample(files, min(shots, len(files))))
    return np.asarray(picks, dtype=np.int64)


def _bundle(query, galleries, make_mask, mask_depends_on) -> list[Trial]:
    """Trials ``0..`` from the galleries; a mask is built once per distinct gallery layout.

    ``make_mask(gallery)`` builds a trial's ignore mask from per-sample arrays
    ``mask_depends_on`` only (e.g. cameras); galleries whose samples agree on those arrays,
    position by position, share one mask (the draws of one protocol usually do: the same
    pairs in the same order), which saves memory and time.
    """
    trials = []
    previous_key: list[np.ndarray] | None = None
    mask = None
    for index, gallery in enumerate(galleries):
        key = [values[gallery] for values in mask_depends_on]
        if previous_key is None or not all(
            np.array_equal(a, b) for a, b in zip(key, previous_key)
        ):
            mask = make_mask(gallery)
            previous_key = key
        trials.append(Trial(index=index, query=query, gallery=gallery, ignore=mask))
    return trials


def _read_perm_file(path: Path) -> list[list[np.ndarray]]:
    """``rand_perm_cam`` of a ``rand_perm_cam.mat``: per camera 1..6, per identity
    1.. (cell index), an int64 (trials, n) array of 1-based image numbers ((0, 0) or
    (trials, 0) where empty).

    Raises:
        UserError: scipy missing, file missing or unreadable, or not that structure.
    """
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError("reading rand_perm_cam.mat needs scipy: pip install scipy") from None
    if not path.is_file():
        raise UserError(
            f"{path} not found: the official SYSU-MM01 protocol reads rand_perm_cam.mat "
            "(wuancong/SYSU-MM01, evaluation/data_split/)"
        )
    try:
        content = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-.mat or v7.3 files
        detail = (str(exc).splitlines() or [""])[0]
        raise UserError(f"{path} could not be read as a MATLAB .mat file ({type(exc).__name__}: {detail})") from None
    bad = UserError(
        f"{path} is not a SYSU-MM01 permutation file: expected a variable rand_perm_cam "
        "holding 6 cells (cameras) of cells (identities) of (trials, n) matrices"
    )
    if "rand_perm_cam" not in content:
        raise bad
    cameras = np.asarray(content["rand_perm_cam"], dtype=object).reshape(-1)
    if cameras.size < 6:
        raise bad
    perms = []
    for cell in cameras[:6]:
        per_id = []
        for entry in np.asarray(cell, dtype=object).reshape(-1):
            arr = np.asarray(entry)
            if arr.size == 0:
                per_id.append(np.zeros((arr.shape[0] if arr.ndim == 2 else 0, 0), dtype=np.int64))
                continue
            if arr.ndim != 2 or not (
                np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            ):
                raise bad
            values = arr.astype(np.int64)
            if np.any(values != arr) or values.min() < 1:
                raise bad
            per_id.append(values)
        perms.append(per_id)
    return perms


def _perm_of(perms: list[list[np.ndarray]], cam: int, pid: int) -> np.ndarray:
    """The (trials, n) permutation of (camera, identity); (0, 0) when the file has none."""
    per_id = perms[cam - 1]
    if 1 <= pid <= len(per_id):
        return per_id[pid - 1]
    return np.zeros((0, 0), dtype=np.int64)
