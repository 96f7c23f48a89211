"""LLCM (Low-Light Cross-Modality) read in its original layout.

Dataset: Zhang and Wang, "Diverse Embedding Expansion Network and Low-Light Cross-Modality
Benchmark for Visible-Infrared Person Re-identification", CVPR 2023 (repo ``ZYK100/LLCM``,
``README.md``): 46,767 boxes of 1,064 identities from 9 cameras, each of which records both
visible (VIS) and near-infrared (NIR) light. DEEN trains 713 classes (``DEEN/test.py``
``n_class = 713``), leaving 351 test identities.

Layout (repo ``ZYK100/LLCM``: ``DEEN/data_loader.py`` ``LLCMData.__init__`` and
``load_data``; ``DEEN/data_manager.py`` ``process_query_llcm`` and ``process_gallery_llcm``;
``DEEN/test.py``; the same functions in repo ``Hua-XC/MSCMNet`` ``data_manager.py``)::

    ROOT/idx/train_vis.txt   lines '<path relative to ROOT> <integer label>'
    ROOT/idx/train_nir.txt   same, NIR images
    ROOT/idx/test_id.txt     one line of comma-separated test identity numbers
    ROOT/test_vis/cam1 .. cam9/<4-digit id>/<file>.jpg
    ROOT/test_nir/cam1 .. cam9/<4-digit id>/<file>.jpg   (DEEN lists no test_nir/cam3; a
                                                           copy's test_nir/cam3 is empty,
                                                           repo ZYK100/LLCM issue #12)

File names read ``<id>_c<camera>_s<...>_f<frame>_<vis|nir>.jpg``, and the training lists
point into ``vis/<id>/`` and ``nir/<id>/``, e.g. ``nir/0001/0001_c01_s185535_f7010_nir.jpg``
(examples quoted in public forks' readers; DEEN itself never parses a training path).
Copies also ship ``idx/test_vis.txt`` and ``idx/test_nir.txt``, which DEEN does not read;
neither does this reader.

Identities. DEEN uses the training label column directly as the class target of a
713-way classifier, so it is a class index, not the identity number (unverified beyond
that: no index line of the real files is public). We take the pid from the path (the
``<id>`` folder, else the ``<id>_`` file-name prefix), like the test side, where DEEN
parses pid and camera from the path (``img_path.split('cam')[1]``); the label column is
checked to be an integer and otherwise ignored.

Cameras. All nine cameras capture both modalities, so ``cam`` is the physical camera
number (1..9) for both: test images take it from their ``camN`` folder, training images
from the ``_c<NN>`` part of the file name (else a ``camN`` folder in the path). DEEN's
``eval_llcm`` removes same-identity, same-camera gallery items, which therefore applies
across modalities. The modality comes from the list (``train_vis``/``train_nir``) or the
test folder (``test_vis``/``test_nir``).
"""

from __future__ import annotations

import re
from pathlib import Path

from common.datasets.base import IR, VIS, DatasetIndex, DatasetSpec, Sample, read_image_list
from common.errors import UserError
from common.evaluation.protocols import Family

CAMERAS = tuple(range(1, 10))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
TEST_FOLDERS = (("test_vis", VIS), ("test_nir", IR))
TRAIN_LISTS = (("train_vis.txt", VIS), ("train_nir.txt", IR))
_HINT = (
    "an LLCM copy holds idx/train_vis.txt and idx/train_nir.txt ('<image path> <label>' lines), "
    "idx/test_id.txt (one line of comma-separated ids) and the test_vis/cam1..9, test_nir/cam1..9 folders"
)
_LINE_FORMAT = "'<image path> <integer label>' like 'nir/0001/0001_c01_s185535_f7010_nir.jpg 0'"
_FILE_CAM = re.compile(r"_c(\d+)(?:_|\.|$)")
_DIR_CAM = re.compile(r"cam(\d+)")
_FILE_PID = re.compile(r"(\d+)_")


def read_test_ids(path: Path) -> list[int]:
    """Parse ``idx/test_id.txt``: comma-separated integer ids (DEEN reads its first line).

    Raises:
        UserError: missing, malformed or empty file (names it).
    """
    if not path.is_file():
        raise UserError(f"{path} is missing; {_HINT}")
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        ids = [int(tok) for tok in text.replace("\n", ",").split(",") if tok.strip()]
    except ValueError:
        raise UserError(
            f"{path} is malformed: expected one line of comma-separated integer ids like '3,5,12'"
        ) from None
    if not ids:
        raise UserError(f"{path} lists no ids: expected one line of comma-separated integer ids like '3,5,12'")
    return ids


def _pid_and_cam(rel: str) -> tuple[int, int] | None:
    parts = Path(rel.replace("\\", "/")).parts
    if not parts:
        return None
    name = parts[-1]
    if len(parts) >= 2 and parts[-2].isdigit():
        pid = int(parts[-2])
    else:
        match = _FILE_PID.match(name)
        if not match:
            return None
        pid = int(match.group(1))
    match = _FILE_CAM.search(name)
    if match:
        cam = int(match.group(1))
    else:
        folders = [m for m in (_DIR_CAM.fullmatch(p) for p in parts[:-1]) if m]
        if not folders:
            return None
        cam = int(folders[-1].group(1))
    return pid, cam


def read_train_list(root: Path, path: Path, modality: str) -> list[Sample]:
    """Parse ``idx/train_vis.txt`` or ``idx/train_nir.txt`` into samples.

    Raises:
        UserError: missing file, malformed line (file and line number named), a path
            without identity or camera 1..9, a listed image that does not exist, or a list
            without any line.
    """

    def parse(rel: str) -> tuple[int, int] | str:
        parsed = _pid_and_cam(rel)
        if parsed is None or parsed[1] not in CAMERAS:
            return f"cannot read identity and camera 1..9 from '{rel}'"
        return parsed

    return read_image_list(root, path, modality, parse=parse, line_format=_LINE_FORMAT, missing_hint=_HINT,
                           restore_hint="restore the LLCM images")


def _test_samples(root: Path, ids: list[int]) -> list[Sample]:
    samples: list[Sample] = []
    for folder_name, modality in TEST_FOLDERS:
        for cam in CAMERAS:
            cam_dir = root / folder_name / f"cam{cam}"
            if not cam_dir.is_dir():
                continue
            for pid in sorted(set(ids)):
                folder = cam_dir / f"{pid:04d}"
                if not folder.is_dir():
                    continue
                names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                samples.extend(Sample(str(folder / name), pid, cam, modality) for name in names)
    return samples


def _sorted(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.pid, s.cam, s.path))


def read_llcm(root: Path) -> DatasetIndex:
    """Read an LLCM copy.

    Args:
        root: the LLCM folder holding ``idx/``, the training images and ``test_vis/``,
            ``test_nir/``.

    Returns:
        :class:`DatasetIndex` named ``"llcm"``: train = the images of both training lists,
        test = every image of the test ids under ``test_vis/camN`` and ``test_nir/camN``,
        each sorted by (pid, cam, path); ``visible_cams``/``infrared_cams`` = the cameras
        present in each modality; ``extra={"test_ids": (...)}`` (sorted).

    Raises:
        UserError: missing root, list or test folder; malformed line or id list; missing
            listed image; training and test ids overlapping; a split lacking a modality.
    """
    root = Path(root).resolve()  # absolute sample paths: the same copy fingerprints the same
    if not root.is_dir():
        raise UserError(
            f"dataset folder {root} does not exist; pass the LLCM root (holding idx/, test_vis/ and test_nir/) to --data-root"
        )
    for name, _ in TRAIN_LISTS:
        if not (root / "idx" / name).is_file():
            raise UserError(f"{root / 'idx' / name} is missing; {_HINT}")
    for folder_name, _ in TEST_FOLDERS:
        if not (root / folder_name).is_dir():
            raise UserError(f"{root / folder_name} is missing; {_HINT}")
    test_ids = read_test_ids(root / "idx" / "test_id.txt")
    train = _sorted([s for name, modality in TRAIN_LISTS for s in read_train_list(root, root / "idx" / name, modality)])
    test = _sorted(_test_samples(root, test_ids))
    overlap = {s.pid for s in train} & set(test_ids)
    if overlap:
        raise UserError(
            f"{root / 'idx'}: ids {sorted(overlap)[:5]} are in both the training lists and test_id.txt; "
            "restore the original idx files"
        )
    for split, samples in (("training", train), ("test", test)):
        for modality, label in ((VIS, "visible"), (IR, "infrared")):
            if not any(s.modality == modality for s in samples):
                raise UserError(f"{root}: the {split} split has no {label} images; {_HINT}")
    visible_cams = tuple(sorted({s.cam for s in train + test if s.modality == VIS}))
    infrared_cams = tuple(sorted({s.cam for s in train + test if s.modality == IR}))
    return DatasetIndex(
        "llcm", root, train, test, visible_cams, infrared_cams, extra={"test_ids": tuple(sorted(set(test_ids)))}
    )


SPEC = DatasetSpec(
    name="llcm",
    title="LLCM",
    read=lambda root, split: read_llcm(root),
    protocol=Family.LLCM,
)
