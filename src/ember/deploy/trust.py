"""TorchScript and AOTInductor files are programs: loading one runs the code it holds (a crafted
TorchScript file can read and write any file the user can). ember loads them only when they are
its own exports, or when the user says they trust the file (`trust=true`); safetensors and ONNX
are the formats to exchange.

"Its own export" is decided by hash, against a record the file's sender cannot write: `ember
export` keeps the sha256 of every program file it writes in this user's data folder
(`$XDG_DATA_HOME/ember/exports.sha256`, by default `~/.local/share/ember/`), besides recording it
in the file's `.json` description. The description alone proves nothing (whoever crafts a file
can write its description too); it tells a file changed since its export from a foreign one.
"""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ember.errors import UnsafeFileError

PROGRAMS = {"torchscript": "TorchScript", "aoti": "AOTInductor"}
EXCHANGE = "exchange models as .safetensors or .onnx files, which hold no code"


def record_path() -> Path:
    """This user's record of the program files ember exported."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "ember" / "exports.sha256"


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remember(digest: str, path: Path) -> None:
    """Add an export's hash to the record: one `sha256  path` line, appended in one write (lines
    of concurrent exports do not interleave); never through a link."""
    where = record_path()
    where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, f"{digest}  {path}\n".encode())
    finally:
        os.close(fd)


def remembered(digest: str) -> bool:
    try:
        with open(record_path(), encoding="utf-8", errors="replace") as f:
            return any(line.split(maxsplit=1)[:1] == [digest] for line in f)
    except OSError:  # no record yet: nothing exported by this user
        return False


def check_program(path: Path, fmt: str, described: str | None, trust: bool, echo: Callable[[str], None]) -> None:
    """Load a TorchScript or AOTInductor file only if ember exported it for this user, or if the
    user trusts it; say either way that loading it runs its program. `described` is the sha256
    in the file's description."""
    if fmt not in PROGRAMS:
        return
    kind = PROGRAMS[fmt]
    digest = sha256(path)
    if trust:
        echo(f"note: {path.name} is {_a(kind)} program and loading it runs its code; trust=true: running it as given")
        return
    if remembered(digest):
        echo(
            f"note: {path.name} is {_a(kind)} program and loading it runs its code; accepted as ember's own export "
            f"(sha256 {digest[:12]}... recorded when you exported it)"
        )
        return
    if described and described != digest:
        why = "its sha256 differs from the one its description recorded at export: the file changed since"
    elif described:
        why = (
            "its hash is not among the exports ember recorded for you (exported by someone else, or on another machine)"
        )
    else:
        why = "it is not an ember export (its description records no hash)"
    raise UnsafeFileError(
        f"{path} is {_a(kind)} program and loading it would run its code; {why}; pass trust=true only if you trust its "
        f"source, export the run again yourself, or {EXCHANGE}"
    )


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"
