"""ember.files: atomic writes leave no temporary file, stale ones are cleaned, the lock is exclusive."""

import os
import signal
import subprocess
import sys

import pytest

from ember.errors import RunBusyError
from ember.files import lock_dir, remove_stale_temps, unlock_dir, write_atomic


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
    write_atomic(target, b"new", durable=True)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


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
