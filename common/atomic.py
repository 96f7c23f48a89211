"""Writing files so that a crash never leaves a half-written one under the final name."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


# errors of the machine, not of the program: reported as one line naming the file
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def unwritable_error(path: Path, exc: OSError):
    """The :class:`common.errors.UserError` for an OSError met writing ``path``, or None
    when the error is not about space or permissions (then it is re-raised as is)."""
    from common.errors import UserError

    if exc.errno in _DISK_FULL:
        return UserError(f"no space left on the device writing {path}: free space and run the command again "
                         "(nothing half-written was kept; a training run resumes from its last complete checkpoint)")
    if exc.errno in _NOT_WRITABLE:
        return UserError(f"cannot write {path} ({exc.strerror}); pass a writable --run-dir (or --out) or fix the folder's permissions")
    return None


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary sibling file, fsync, then rename over it.

    A crash, a kill or a full disk at any moment leaves either the previous complete file
    or the new complete file under ``path``, never a partial one; the temporary file is
    removed when writing fails.

    Args:
        path: final file name; its folder is created if missing.
        write: called with a binary file object to fill.

    Raises:
        UserError: the disk is full, or the folder cannot be created or written (one line
            naming ``path``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (unwritable_error(path, exc) or exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise (unwritable_error(path, exc) or exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text to ``path``."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
