"""A run's files: private to the user (folders 0700, files 0600) and kept inside their folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) if needed; `path` itself ends up 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def _open_fd(path: Path, flags: int) -> int:
    # O_NOFOLLOW: a symlink planted where a run file goes is refused, not written through.
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # also when the file was already there with other modes
    return fd


def write_private(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` (replacing it), readable by the user only (0600)."""
    fd = _open_fd(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def write_named(path: Path, data: bytes | str) -> Path:
    """Write `data` to a path the user named on the command line (`-o`): followed as named (a
    symlink, `/dev/stdout`), created 0600 when new; an existing file keeps the mode its owner
    gave it. Files the run makes in its own folder use `write_private`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def append_private(path: Path) -> IO[bytes]:
    """`path` opened for appending bytes, created 0600 (and made 0600 if it was not)."""
    return os.fdopen(_open_fd(path, os.O_WRONLY | os.O_APPEND), "ab")


def child_path(folder: Path, name: str, what: str = "file name") -> Path:
    """`folder / name`, checked to stay inside `folder` (no separator, not `.` or `..`, and not
    a symlink that leads out); ValueError naming the thing and the rule otherwise."""
    path = folder / name
    if name in ("", ".", "..") or path.parent != folder or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"{what} {name!r} would leave {folder}: a name in a run folder is one path component")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {name!r} leads out of {folder} (a symlink?); refusing to use it")
    return path
