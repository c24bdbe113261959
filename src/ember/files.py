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
import stat
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


def write_atomic(
    path: str | Path,
    data: bytes | str | Callable[[BinaryIO], None],
    within: Path | None = None,
    size: Callable[[], int] | None = None,
) -> None:
    """Write `data` (bytes, text, or a function that writes into a binary file) to a temporary
    file beside `path`, then rename it over `path`: a reader, or a job killed mid-write, sees the
    old file or the new one, never half of one.

    No symbolic link is followed at the temporary name (a link planted there is replaced, never
    written through), and the rename replaces a link at `path` instead of writing its target.
    `within` (a run directory) confines the write: every folder from it down to `path` is opened
    without following links, so a linked `checkpoints/` cannot send a file out of the run, and an
    OSError becomes one line (a full disk says how much space the file needs: `size()` bytes,
    asked only then)."""
    path = Path(path)
    with write_errors(path, within, size or (lambda: _size(data))):
        folder = open_folder(path.parent, within)
        tmp = temp_path(path).name
        try:
            _unlink_at(tmp, folder)  # a stale file of a recycled pid, or a link planted under its name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder)
            with os.fdopen(fd, "wb") as f:
                if callable(data):
                    data(f)
                else:
                    f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())  # the data on disk before the rename, or a power cut leaves `path` empty
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
        finally:
            _unlink_at(tmp, folder)
            os.close(folder)


def _size(data) -> int | None:
    return None if callable(data) else len(data.encode() if isinstance(data, str) else data)


def _unlink_at(name: str, folder: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def open_folder(folder: Path, within: Path | None = None) -> int:
    """A descriptor of `folder`; with `within`, reached from `within` one name at a time, none of
    them a symbolic link (OutputError otherwise), so what is written there stays inside it."""
    if within is None:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    root, folder = Path(os.path.abspath(within)), Path(os.path.abspath(folder))
    if folder != root and root not in folder.parents:
        raise OutputError(
            f"{str(folder)!r} is outside the run directory {str(root)!r}; ember writes a run's files inside it only"
        )
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for name in folder.relative_to(root).parts:
        try:
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(os.path.join(root, name)):
                raise linked(root / name, root) from None
            raise
        finally:
            os.close(fd)
        fd, root = inner, root / name
    return fd


def linked(path: Path, root: Path) -> OutputError:
    return OutputError(
        f"{str(path)!r} is a symbolic link in the run directory {str(root)!r}; ember never writes through a link out "
        "of a run: remove the link (or replace it with a real folder or file)"
    )


def refuse_links(root: Path, names) -> None:
    """Refuse a run directory in which any of `names` (the files and folders ember writes there)
    is a symbolic link: a library that opens its file by name (TensorBoard, the CSV logger) would
    write wherever it points."""
    for name in names:
        if os.path.islink(Path(root) / name):
            raise linked(Path(root) / name, Path(root))


def run_folder(root: Path, name: str) -> Path:
    """`root/name`, a folder of a run that a writer of its own fills (the exports); refused (one
    line) if it is a symbolic link or a file."""
    path = Path(root) / name
    refuse_links(root, [name])
    if path.exists() and not path.is_dir():
        raise OutputError(f"{str(path)!r} is not a folder; remove or rename it, then retry")
    return path


@contextlib.contextmanager
def write_errors(path: Path, within: Path | None, size: Callable[[], int | None] | None):
    """An OSError while writing a run's file becomes one line: a full disk or a file-size limit
    says how much space the file needs, a deleted run directory says so. Outside a run (`within`
    None) the caller words its own (see output_errors)."""
    try:
        yield
    except OSError as e:
        if within is None:
            raise
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OutputError(
                f"cannot write {str(path)!r}: {_space(e, path, size)}; the files written before it are kept"
            ) from None
        if not Path(within).is_dir():
            raise OutputError(
                f"the run directory {str(within)!r} was deleted or unmounted while the run wrote {path.name}; "
                "nothing more can be saved: start the run again"
            ) from None
        raise OutputError(
            f"cannot write {str(path)!r} ({e.strerror or e}); free space or fix the folder's permissions, then resume"
        ) from None


def _space(e: OSError, path: Path, size: Callable[[], int | None] | None) -> str:
    n = size() if size else None
    need = f"it needs about {_mb(n)}" if n else "it needs more space"
    if e.errno == errno.EFBIG:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        cap = f"{_mb(limit)}" if limit != resource.RLIM_INFINITY else "the file system's largest file"
        return (
            f"a file-size limit ({cap}; ulimit -f, or the batch system's file-size limit) stops it and "
            f"{need}: raise the limit"
        )
    free = None
    with contextlib.suppress(OSError):
        st = os.statvfs(next(p for p in [path.parent, *path.parents] if p.exists()))
        free = st.f_bavail * st.f_frsize
    where = f" ({_mb(free)} free)" if free is not None else ""
    return f"the disk is full{where} and {need}: free space on that disk (or train under another run.root), then resume"


def _mb(n: int) -> str:
    if n < 1e6:
        return f"{max(n, 1000) / 1e3:.0f} kB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished file `tmp` over `path` in the same folder. The data is flushed to disk
    before the rename and the rename after it: without the first, a power cut can leave `path`
    empty; without the second, pointing at the old file."""
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
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
    try:  # O_NOFOLLOW: a .lock planted as a link must not truncate the file it points to
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise linked(path, directory) from None
        raise EmberError(
            f"cannot write the run directory {str(directory)!r} ({e.strerror}); choose a writable run.root or run.dir"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:  # a FIFO or device, or a hard link to another file
        os.close(fd)
        raise OutputError(
            f"{str(path)!r} is not a plain file of its own (a hard link, FIFO or device); remove it, then retry"
        )
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a filesystem without locks: go unguarded
            _held[directory] = fd
            return
        holder = _read_holder(fd)
        os.close(fd)
        raise RunBusyError(
            f"{str(directory)!r} is in use by {holder}; wait for it to end or stop it, then retry (a run directory "
            "takes one writer at a time)"
        ) from None
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


def save_checkpoint(obj, path: Path, within: Path | None = None) -> None:
    """torch.save through write_atomic: a reader (or a job killed mid-write) sees the old
    checkpoint or the new one, never half of one. `within`: the run directory (see write_atomic)."""
    write_atomic(path, lambda f: _torch_save(obj, f), within=within, size=lambda: saved_bytes(obj))


def _torch_save(obj, f: BinaryIO) -> None:
    """torch.save, raising the OSError of a failed write (a full disk) that its zip writer turns
    into a RuntimeError ("unexpected pos")."""
    failed: list[OSError] = []

    class Writes:
        def write(self, b):
            try:
                return f.write(b)
            except OSError as e:
                failed.append(e)
                raise

        def flush(self):
            f.flush()

    try:
        torch.save(obj, Writes())
    except RuntimeError:
        if failed:
            raise failed[0] from None
        raise


def saved_bytes(obj) -> int:
    """The size of `obj`'s checkpoint file, counted by writing it to nowhere (on a full disk only)."""

    class Count:
        n = 0

        def write(self, b):
            self.n += len(b)
            return len(b)

        def flush(self):
            pass

    counter = Count()
    torch.save(obj, counter)
    return counter.n


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, read with weights_only (plain data and tensors: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; check the run directory (ember runs lists them)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}); it is corrupt or not an ember checkpoint"
        ) from None


def model_weights(ckpt, path: Path) -> dict:
    """The weights a run tests in a checkpoint (best.pt, last.pt), or a one-line CheckpointError.
    Under trainer.ema they are the moving average: a step checkpoint (last.pt, read where a run
    has no validation and so no best.pt) keeps the training weights under "model" for resume and
    the average, which the run tested, saved and exported, under "ema" (AveragedModel's keys)."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise damaged(
            path,
            (
                "no model weights"
                if isinstance(ckpt, dict)
                else f"it holds a {type(ckpt).__name__}, not a checkpoint's mapping"
            ),
        )
    if isinstance(ckpt.get("ema"), dict):
        return {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    return ckpt["model"]


def damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} is damaged ({why}); delete it (ember then reads the previous checkpoint) "
        "or restore it from a copy of the run"
    )
