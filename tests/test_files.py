"""ember.files: atomic writes leave no temporary file, stale ones are cleaned, the lock is exclusive."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

from ember.errors import OutputError, RunBusyError
from ember.files import (
    check_output,
    lock_dir,
    output_errors,
    png_bytes,
    remove_stale_temps,
    run_folder,
    save_checkpoint,
    temp_path,
    unlock_dir,
    write_atomic,
)


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
    with pytest.raises(
        OutputError, match=r"cannot write the report to '.*folder': it is a folder; choose another path with -o"
    ):
        check_output(tmp_path / "folder", "the report", "-o")
    with pytest.raises(OutputError, match=r"to '.*file/deeper/r.html': '.*file' is a file, not a folder"):
        check_output(tmp_path / "file/deeper/r.html", "the report", "-o")
    with pytest.raises(OutputError, match=r"cannot write the compressed run to '.*file': it is a file"):
        check_output(tmp_path / "file", "the compressed run", "out=", folder=True)
    assert check_output(tmp_path / "new/deeper/r.html", "the report", "-o") == tmp_path / "new/deeper/r.html"
    assert not (tmp_path / "new").exists()  # checking makes nothing


def test_output_errors_name_the_path_and_the_cause():
    full = pytest.raises(
        OutputError,
        match=r"cannot write the benchmark to 'b.json' \(No space left on device\); free space on that disk",
    )
    with full, output_errors("b.json", "the benchmark", "out="):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_folder_even_root_cannot_write_is_one_line():
    """Root writes through chmod, so a kernel file system stands in for a read-only disk."""
    try:
        open("/sys/ember-write-probe", "w").close()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    refused = pytest.raises(
        OutputError,
        match=(
            r"cannot write the report to '/sys/r.html' \((Permission denied|Read-only file system)\); "
            r"choose another path with -o"
        ),
    )
    with refused, output_errors("/sys/r.html", "the report", "-o"):
        write_atomic("/sys/r.html", "<html>")


# -- symbolic links: nothing ember writes follows one out of a run ---------------------------------


@pytest.fixture
def victim(tmp_path):
    """A file outside the run that a planted link points at: it must keep its content."""
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(OutputError, match=r"'.*run/\.lock' is a symbolic link in the run directory .*remove the link"):
        lock_dir(run)
    assert victim.read_text() == "precious"


def test_a_lock_that_is_a_hard_link_is_refused(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    os.link(victim, run / ".lock")
    with pytest.raises(OutputError, match="not a plain file of its own"):
        lock_dir(run)
    assert victim.read_text() == "precious"


def test_write_atomic_replaces_a_link_and_never_writes_through_a_planted_temporary(tmp_path, victim):
    target = tmp_path / "summary.json"
    target.symlink_to(victim)
    temp_path(target).symlink_to(victim)  # what an attacker who guesses the pid plants
    write_atomic(target, "{}")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_text() == "{}"
    assert not temp_path(target).exists()


def test_a_write_within_a_run_refuses_a_linked_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match=r"'.*run/checkpoints' is a symbolic link in the run directory"):
        write_atomic(run / "checkpoints" / "last.pt", b"x", within=run)
    with pytest.raises(OutputError, match="outside the run directory"):
        write_atomic(tmp_path / "elsewhere.txt", b"x", within=run)
    assert not list(outside.iterdir())
    with pytest.raises(OutputError, match="is a symbolic link"):
        run_folder(run, "checkpoints")
    assert run_folder(run, "export") == run / "export"


# -- a full disk, a file-size limit, a deleted run ---------------------------------------------


def test_a_full_disk_keeps_the_old_file_and_says_how_much_space_is_needed(tmp_path, monkeypatch):
    target = tmp_path / "best.pt"
    write_atomic(target, b"old", within=tmp_path)
    real_fsync = os.fsync

    def full(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}") and not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(
        OutputError,
        match=(
            r"cannot write '.*best.pt': the disk is full \(.* free\) and it needs about \d+ kB: free space .*; "
            r"the files written before it are kept"
        ),
    ):
        save_checkpoint({"w": torch.zeros(10)}, target, within=tmp_path)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


FSIZE = """
import resource, sys, torch
from ember.files import save_checkpoint, write_atomic
from ember.errors import EmberError
write_atomic(sys.argv[1] + '/last.pt', b'old', within=sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    path = __import__('pathlib').Path(sys.argv[1]) / 'last.pt'
    save_checkpoint({'w': torch.zeros(1_000_000)}, path, within=sys.argv[1])
except EmberError as e:
    print(e)
"""


def test_a_file_size_limit_keeps_the_old_checkpoint_and_names_the_limit(tmp_path):
    out = subprocess.run([sys.executable, "-c", FSIZE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "a file-size limit (100 kB; ulimit -f" in out.stdout and "it needs about 4.0 MB" in out.stdout, out.stdout
    assert (tmp_path / "last.pt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_run_directory_deleted_while_writing_is_one_line(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.rmtree(run)
    with pytest.raises(
        OutputError, match=r"the run directory '.*run' was deleted or unmounted while the run wrote step-1.pt"
    ):
        save_checkpoint({"w": torch.zeros(1)}, run / "checkpoints" / "step-1.pt", within=run)
