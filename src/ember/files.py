"""Writing files safely: atomic replacement, temporary files that die with their writer, the
lock that gives a run directory one writer at a time, and PNG images written with zlib alone.

Every file ember writes goes through `write_atomic` (or `publish`, for a file another library
wrote to a temporary path), so a reader never sees half a file, even after a crash.

A temporary file is named `.<name>.<pid>.tmp` after the process writing it. The writer removes it
on any error; one left by a SIGKILL is removed by the next process that takes the directory
(`remove_stale_temps`), which can tell from the pid that its writer is gone.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ember.errors import CheckpointError, EmberError, OutputError, RunBusyError

LOCK_NAME = ".lock"
_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")
_held: dict[Path, int] = {}  # locked directory -> the open descriptor that holds its lock


def cache_dir() -> Path:
    """Where ember keeps what it can regenerate (simulated data, measured machine peaks): the user
    sees it in the run output and may delete it at any time."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ember"


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, text, or a function that writes into a binary file) to a temporary
    file beside `path`, then `publish` it: a reader, or a job killed mid-write, sees the old file
    or the new one, never half of one."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished file `tmp` over `path` in the same folder. The data is flushed to disk
    before the rename and the rename after it: without the first, a power cut can leave `path`
    empty; without the second, pointing at the old file."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An (H, W) grey or (H, W, 3) RGB uint8 array as a PNG file's bytes, with zlib alone (no
    Pillow: the report and `ember sample` need no imaging library)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + pixels[i].tobytes() for i in range(h))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def check_output(path: str | Path, what: str, option: str, folder: bool = False) -> Path:
    """Refuse an output path that cannot take `what` before any work is done for it: a folder
    where a file goes (or a file where a folder goes), a file in the way of its folders, or a
    folder this process may not write. `option` is how the user chose the path (`out=`, `-o`)."""
    path = Path(path)
    fix = f"choose another path with {option}"
    if path.is_dir() != folder and path.exists():
        raise OutputError(f"cannot write {what} to {str(path)!r}: it is a {'file' if folder else 'folder'}; {fix}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {what} to {str(path)!r}: {str(ancestor)!r} is a file, not a folder; {fix}")
    if not os.access(ancestor, os.W_OK):
        raise OutputError(f"cannot write {what} to {str(path)!r}: the folder {str(ancestor)!r} is not writable; {fix}")
    return path


@contextlib.contextmanager
def output_errors(path: str | Path, what: str, option: str):
    """An OSError while writing an output (a full or read-only disk, a path that changed since
    check_output) becomes one line naming the path and the cause."""
    try:
        yield
    except OSError as e:
        fix = "free space on that disk" if e.errno == errno.ENOSPC else f"choose another path with {option}"
        raise OutputError(f"cannot write {what} to {str(path)!r} ({e.strerror or e}); {fix}") from None


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temporary files in `directory` whose writing process is gone; return them."""
    removed = []
    for p in Path(directory).glob(".*.tmp"):
        m = _TEMP.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def lock_dir(directory: Path) -> None:
    """Make this process the one writer of `directory`, or raise RunBusyError naming the holder.

    A POSIX record lock (fcntl.lockf) on `<directory>/.lock`, held until `unlock_dir` or the
    process ends: the kernel drops it on any exit, SIGKILL included, so a dead holder never blocks
    the next start. Not an flock: forked DataLoader workers share an flock with their parent, and
    a SIGKILLed trainer's workers kept its run locked until they noticed the parent was gone; a
    record lock belongs to the process alone. (It is also dropped when this process closes any
    descriptor of the file: nothing but this module opens it.)
    """
    directory = Path(directory).resolve()
    if directory in _held:
        return
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise EmberError(f"cannot write the run directory {str(directory)!r} ({e.strerror}); choose a writable run.root or run.dir") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a filesystem without locks: go unguarded
            _held[directory] = fd
            return
        holder = _read_holder(fd)
        os.close(fd)
        raise RunBusyError(f"{str(directory)!r} is in use by {holder}; wait for it to end or stop it, then retry (a run directory takes one writer at a time)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
    _held[directory] = fd


def unlock_dir(directory: Path) -> None:
    fd = _held.pop(Path(directory).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the lock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on {info['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written its name yet
        return "another process"


def save_checkpoint(obj, path: Path) -> None:
    """torch.save through write_atomic: a reader (or a job killed mid-write) sees the old
    checkpoint or the new one, never half of one."""
    write_atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, read with weights_only (plain data and tensors: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the run directory (ember runs lists them)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}); it is corrupt or not an ember checkpoint") from None
