"""Writing files so that a failure names them and leaves nothing half-written, and telling
whether another process holds a file's lock."""

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Names `path` in a failed write's error when the writer did not (Keras's `.keras`
    zip, HDF5): a full disk during training said only "No space left on device.", or HDF5's
    two-line "Can't synchronously write data (file write failed: time = ...".
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, os.strerror(err.errno), os.fspath(path)) from err


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, durable: bool = False) -> None:
    """Writes `data` (text as UTF-8) to `path` through `<path>.tmp` and a rename: readers (and
    a kill) never see half a file, and a failed write (a full disk) names `path`, keeps the
    previous file and leaves no temp file. `durable` syncs the bytes to the disk before the
    rename, and the rename after it: once it returns, a power loss keeps the new file."""
    path = os.fspath(path)
    temp = path + ".tmp"
    try:
        with writing(path):  # a full disk: Python names no file
            with open(temp, "wb") as file:
                file.write(data.encode() if isinstance(data, str) else data)
                if durable:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temp, path)
            if durable:
                sync(os.path.dirname(path) or ".")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)


def sync(path: str | os.PathLike[str]) -> None:
    """Syncs one file's bytes, or one folder's entries (the names made, renamed or deleted in
    it), to the disk. A filesystem that cannot sync folders (EINVAL) is left as it is."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as err:
        if err.errno != errno.EINVAL or not stat.S_ISDIR(os.fstat(descriptor).st_mode):
            raise
    finally:
        os.close(descriptor)


def sync_tree(path: str | os.PathLike[str]) -> None:
    """Syncs every regular file under the folder `path`, and every folder's entries, `path`'s
    own included: before a rename publishes `path`. A rename's metadata can reach the disk
    before the data written under the old name, so after a power loss the new name could hold
    empty or truncated files. The caller syncs the rename's parent after it. Symlinks are not
    followed."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                sync_tree(entry.path)
            elif entry.is_file(follow_symlinks=False):
                sync(entry.path)
    sync(path)


def locked_by_another(path: str | os.PathLike[str]) -> bool | None:
    """Whether another open file holds an `flock` on `path` (a file or a folder); None when
    `path` does not exist. A shared lock, tried without waiting on a descriptor of its own and
    released at once: it fails while a holder has its exclusive lock, and leaves that lock as
    it is (a holder that takes it in those microseconds waits, or, without waiting, is
    refused)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # and with it the probe's own lock
    return False
