"""ember.files: atomic writes leave no temporary file, stale ones are cleaned, the lock is exclusive."""

import errno
import os
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest

from ember.errors import OutputError, RunBusyError
from ember.files import check_output, lock_dir, output_errors, png_bytes, remove_stale_temps, unlock_dir, write_atomic


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_atomic_replaces_the_file_and_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "a.json"
    write_atomic(target, "old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(target, broken)
    assert target.read_text() == "old"
    write_atomic(target, b"new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("shape", [(5, 6, 3), (4, 7)])
def test_png_bytes_decode_back_to_the_pixels(shape):
    pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    data = png_bytes(pixels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # Decode the single IDAT chunk back: each row is a filter byte 0, then the row's pixels.
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    row = pixels[0].size + 1
    rows = [raw[i * row + 1 : (i + 1) * row] for i in range(shape[0])]
    assert np.array_equal(np.frombuffer(b"".join(rows), np.uint8).reshape(shape), pixels)


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f".summary.json.{dead_pid()}.tmp"
    mine = tmp_path / f".summary.json.{os.getpid()}.tmp"
    parents = tmp_path / f".metrics.jsonl.{os.getppid()}.tmp"
    other = tmp_path / ".notes.tmp"  # not one of ours: no pid in the name
    for p in (stale, mine, parents, other):
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, parents, other))


def test_lock_is_refused_while_another_process_holds_it_and_recovered_after_sigkill(tmp_path, hold_lock):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(RunBusyError, match=f"in use by process {holder.pid} on "):
            lock_dir(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_dir(tmp_path)  # the kernel dropped the dead holder's lock
    lock_dir(tmp_path)  # taking it again in the same process is a no-op
    unlock_dir(tmp_path)
    holder = hold_lock(tmp_path)  # and released: another process takes it at once
    holder.stdin.close()
    assert holder.wait() == 0


def test_check_output_refuses_a_folder_a_file_in_the_way_and_a_file_for_a_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write the report to '.*folder': it is a folder; choose another path with -o"):
        check_output(tmp_path / "folder", "the report", "-o")
    with pytest.raises(OutputError, match=r"to '.*file/deeper/r.html': '.*file' is a file, not a folder"):
        check_output(tmp_path / "file/deeper/r.html", "the report", "-o")
    with pytest.raises(OutputError, match=r"cannot write the compressed run to '.*file': it is a file"):
        check_output(tmp_path / "file", "the compressed run", "out=", folder=True)
    assert check_output(tmp_path / "new/deeper/r.html", "the report", "-o") == tmp_path / "new/deeper/r.html"
    assert not (tmp_path / "new").exists()  # checking makes nothing


def test_output_errors_name_the_path_and_the_cause():
    full = pytest.raises(OutputError, match=r"cannot write the benchmark to 'b.json' \(No space left on device\); free space on that disk")
    with full, output_errors("b.json", "the benchmark", "out="):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_folder_even_root_cannot_write_is_one_line():
    """Root writes through chmod, so a kernel file system stands in for a read-only disk."""
    try:
        open("/sys/ember-write-probe", "w").close()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    refused = pytest.raises(OutputError, match=r"cannot write the report to '/sys/r.html' \((Permission denied|Read-only file system)\); choose another path with -o")
    with refused, output_errors("/sys/r.html", "the report", "-o"):
        write_atomic("/sys/r.html", "<html>")
