"""SYSU-MM01 read in its original layout.

Layout (Wu et al., "RGB-Infrared Cross-Modality Person Re-Identification", ICCV 2017;
wuancong/SYSU-MM01 README; mangye16/Cross-Modal-Re-ID-baseline:pre_process_sysu.py)::

    ROOT/cam1 .. cam6/<4-digit id>/<4-digit n>.jpg
    ROOT/exp/train_id.txt, val_id.txt, test_id.txt   (one line of comma-separated ids)

Cameras 1, 2, 4, 5 are visible (1 and 2 indoor), 3 and 6 infrared (3 in the same room as
camera 2). Training uses the train + val ids (395 identities), testing the 96 test ids, as
AGW's pre-processing does. The demo dataset is written in exactly this layout and read by
this same reader.
"""

from __future__ import annotations

from pathlib import Path

from common.datasets.base import IR, VIS, DatasetIndex, DatasetSpec, Sample
from common.errors import UserError
from common.evaluation.protocols import Family

VISIBLE_CAMS = (1, 2, 4, 5)
INFRARED_CAMS = (3, 6)
ID_LISTS = ("train_id.txt", "val_id.txt", "test_id.txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_id_list(path: Path) -> list[int]:
    """Parse one SYSU-MM01 id list: a single line of comma-separated integers.

    Raises:
        UserError: if the file is missing or not such a line (names the file).
    """
    if not path.is_file():
        raise UserError(
            f"{path} is missing; a SYSU-MM01 copy holds exp/train_id.txt, exp/val_id.txt and exp/test_id.txt "
            "(each one line of comma-separated ids)"
        )
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        ids = [int(tok) for tok in text.replace("\n", ",").split(",") if tok.strip()]
    except ValueError:
        raise UserError(f"{path} is malformed: expected one line of comma-separated integer ids like '1,2,4'") from None
    if not ids:
        raise UserError(f"{path} lists no ids: expected one line of comma-separated integer ids like '1,2,4'")
    return ids


def _samples(root: Path, ids: list[int]) -> list[Sample]:
    samples: list[Sample] = []
    for pid in sorted(set(ids)):
        for cam in range(1, 7):
            folder = root / f"cam{cam}" / f"{pid:04d}"
            if not folder.is_dir():
                continue
            modality = IR if cam in INFRARED_CAMS else VIS
            names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            samples.extend(Sample(str(folder / name), pid, cam, modality) for name in names)
    return samples


def read_sysu(root: Path, name: str) -> DatasetIndex:
    """Read a SYSU-MM01 (or demo) copy.

    Args:
        root: the dataset folder holding ``cam1``..``cam6`` and ``exp/``.
        name: registry name to record (this file's or the demo's, which is written in this layout).

    Returns:
        :class:`DatasetIndex` with train = train + val ids, test = test ids, samples sorted
        by (pid, cam, file name).

    Raises:
        UserError: missing root, camera folder or id list; an id list that overlaps
            another or names ids without images in any camera; a split with no images of one
            modality.
    """
    root = Path(root).resolve()  # absolute sample paths: the same copy fingerprints the same
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; pass the SYSU-MM01 root (holding cam1..cam6 and exp/) to --data-root")
    missing = [f"cam{c}" for c in range(1, 7) if not (root / f"cam{c}").is_dir()]
    if missing:
        raise UserError(
            f"{root} is not a SYSU-MM01 copy: {', '.join(missing)} missing; the root holds cam1..cam6 and exp/"
        )
    train_ids, val_ids, test_ids = (read_id_list(root / "exp" / f) for f in ID_LISTS)
    overlap = set(train_ids + val_ids) & set(test_ids)
    if overlap:
        raise UserError(
            f"{root / 'exp'}: ids {sorted(overlap)[:5]} are in both the training and the test lists; restore the original id lists"
        )
    train = _samples(root, train_ids + val_ids)
    test = _samples(root, test_ids)
    for listed, samples, files in ((train_ids + val_ids, train, "exp/train_id.txt + exp/val_id.txt"), (test_ids, test, "exp/test_id.txt")):
        absent = sorted(set(listed) - {s.pid for s in samples})
        if absent:
            raise UserError(
                f"{root}: {len(absent)} ids listed in {files} have no images in any camera folder (first: {absent[0]:04d}, "
                f"looked for cam1..cam6/{absent[0]:04d}/); restore those folders or the original id lists"
            )
    for split, samples in (("training", train), ("test", test)):
        for modality, label in ((VIS, "visible"), (IR, "infrared")):
            if not any(s.modality == modality for s in samples):
                raise UserError(f"{root}: the {split} ids have no {label} images; check cam folders and exp/ id lists")
    return DatasetIndex(name, root, train, test, VISIBLE_CAMS, INFRARED_CAMS)


SPEC = DatasetSpec(
    name="sysu",
    title="SYSU-MM01",
    read=lambda root, split: read_sysu(root, name="sysu"),
    protocol=Family.SYSU_MM01,
)
