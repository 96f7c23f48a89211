"""RegDB read in its original layout (the index files every public VI-ReID code uses).

Dataset: Nguyen, Hong, Kim, Park, "Person Recognition System Based on a Combination of Body
Images from Visible Light and Thermal Cameras", Sensors 17(3):605, 2017. 412 identities,
each seen by one visible and one (aligned) thermal camera, 10 images per identity and
modality. The VI-ReID split files come with the AGW baseline's copy of the dataset.

Layout (repo ``mangye16/Cross-Modal-Re-ID-baseline``: ``data_loader.py``
``RegDBData.__init__`` and ``load_data``; ``data_manager.py`` ``process_test_regdb``;
``test.py``)::

    ROOT/idx/train_visible_{t}.txt   ROOT/idx/train_thermal_{t}.txt    t = 1..10
    ROOT/idx/test_visible_{t}.txt    ROOT/idx/test_thermal_{t}.txt
    ROOT/Visible/<person id>/<file>.bmp
    ROOT/Thermal/<person id>/<file>.bmp

Each index line is ``<path relative to ROOT> <integer label>`` (AGW's ``load_data`` splits
on one space). Image files are named ``<sex>_<front|back>_<v|t>_<frame>_<person id>.bmp``,
e.g. ``Visible/1/male_front_v_00007_1.bmp``, ``Thermal/1/male_front_t_00007_1.bmp``
(names as quoted in public forks of the AGW code; AGW itself never parses them, and
neither does this reader beyond the person folder).

Trials: trial ``t`` splits the 412 identities into 206 training and 206 test identities
(AGW ``n_class = 206``); test = 2060 visible + 2060 thermal images. AGW's ``test.py``
searches visible -> thermal by default (query = ``test_visible_t``, gallery =
``test_thermal_t``, the whole file, no random draw) and thermal -> visible with
``--tvsearch``; results are averaged over trials 1..10.

Person ids. The label column is NOT the person id: it is a per-trial class index 0..205 in
both the training and the test files (public copies show lines like
``Visible/285/male_back_v_05528_285.bmp 0`` and ``Visible/168/male_front_v_04111_168.bmp 6``
in a test file); AGW only ever compares labels within one trial, so that works there. Train
and test labels of one trial therefore collide (both 0..205 for different people). We take
the person id from the ``<person id>`` folder instead (as ``RegDBDataset`` readers that
parse ``int(path.split('/')[-2])`` do), so a pid means the same person in every split and
trial; the label column is checked to be an integer and otherwise ignored.

Cameras: one visible camera (``cam=1``) and one thermal camera (``cam=2``); the modality
comes from the index file (``*_visible_*`` or ``*_thermal_*``).
"""

from __future__ import annotations

from pathlib import Path

from common.datasets.base import IR, VIS, DatasetIndex, DatasetSpec, Sample, read_image_list
from common.errors import UserError
from common.evaluation.protocols import Family

TRIALS = tuple(range(1, 11))
VISIBLE_CAM = 1
THERMAL_CAM = 2
_LISTS_HINT = "a RegDB copy holds idx/{train,test}_{visible,thermal}_{1..10}.txt"
_LINE_FORMAT = "'<image path> <integer label>' like 'Visible/1/male_front_v_00007_1.bmp 0'"


def _check_trial(trial: object) -> int:
    if isinstance(trial, bool) or not isinstance(trial, int) or trial not in TRIALS:
        raise UserError(f"RegDB split {trial!r} is outside 1..10; the idx lists are numbered 1 to 10 (--split)")
    return trial


def read_index_file(root: Path, path: Path, modality: str) -> list[Sample]:
    """Parse one RegDB index list into samples (pid from the person folder, see module doc).

    Raises:
        UserError: missing file, a malformed line (named by file and line number), an image
            path without a numeric person folder, a listed image that does not exist, or a
            list without any line.
    """
    cam = VISIBLE_CAM if modality == VIS else THERMAL_CAM

    def parse(rel: str) -> tuple[int, int] | str:
        parts = Path(rel.replace("\\", "/")).parts
        if len(parts) < 2 or not parts[-2].isdigit():
            return f"'{rel}' has no numeric person-id folder"
        return int(parts[-2]), cam

    return read_image_list(root, path, modality, parse=parse, line_format=_LINE_FORMAT, missing_hint=_LISTS_HINT,
                           restore_hint="restore the RegDB Visible/ and Thermal/ images")


def _sorted(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.pid, s.cam, s.path))


def read_regdb(root: Path, trial: int = 1) -> DatasetIndex:
    """Read one trial of a RegDB copy.

    Args:
        root: the RegDB folder holding ``idx/``, ``Visible/`` and ``Thermal/``.
        trial: which of the ten published splits to read, 1..10.

    Returns:
        :class:`DatasetIndex` named ``"regdb"``: train = the trial's training images of
        both modalities, test = its test images of both modalities, each sorted by
        (pid, cam, path); ``visible_cams=(1,)``, ``infrared_cams=(2,)``,
        ``extra={"trial": trial}``.

    Raises:
        UserError: trial outside 1..10, missing root or index file, malformed line, missing
            image, or training and test lists sharing an identity.
    """
    trial = _check_trial(trial)
    root = Path(root).resolve()  # absolute sample paths: the same copy fingerprints the same
    if not root.is_dir():
        raise UserError(
            f"dataset folder {root} does not exist; pass the RegDB root (holding idx/, Visible/ and Thermal/) to --data-root"
        )
    lists = {
        (split, modality): root / "idx" / f"{split}_{word}_{trial}.txt"
        for split in ("train", "test")
        for modality, word in ((VIS, "visible"), (IR, "thermal"))
    }
    for path in lists.values():  # report a missing list before parsing any
        if not path.is_file():
            raise UserError(f"{path} is missing; {_LISTS_HINT}")
    parsed = {key: read_index_file(root, path, key[1]) for key, path in lists.items()}
    train = _sorted(parsed["train", VIS] + parsed["train", IR])
    test = _sorted(parsed["test", VIS] + parsed["test", IR])
    overlap = {s.pid for s in train} & {s.pid for s in test}
    if overlap:
        raise UserError(
            f"{root / 'idx'}: person ids {sorted(overlap)[:5]} are in both the training and the test lists "
            f"of trial {trial}; restore the original idx lists"
        )
    return DatasetIndex("regdb", root, train, test, (VISIBLE_CAM,), (THERMAL_CAM,), extra={"trial": trial})


SPEC = DatasetSpec(
    name="regdb",
    title="RegDB",
    read=lambda root, split: read_regdb(root, trial=split),
    protocol=Family.REGDB,
    splits=len(TRIALS),  # ten published splits, one trained model each (AGW and the papers report their mean)
)
