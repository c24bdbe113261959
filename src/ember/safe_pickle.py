"""Reading pickle files that cannot run code.

A pickle names the functions and classes that rebuild its objects, and plain `pickle.load` imports
and calls whatever it names: a crafted file runs `os.system`. Some formats ember reads are pickles
by design (CIFAR python batches, torch.distributed.checkpoint's `.metadata`), so they go through
this unpickler, which imports and calls only the names their format holds and refuses the file at
the first other one, before anything from it has been called.
"""

import io
import pickle
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

from ember.errors import UnsafeFileError


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self, file: BinaryIO, allowed: Collection[tuple[str, str]], path: Path, kind: str, fix: str, encoding: str
    ):
        super().__init__(file, encoding=encoding)
        self.allowed, self.path, self.kind, self.fix = allowed, path, kind, fix

    def find_class(self, module: str, name: str):
        # Checked before the import too: importing an arbitrary module can run its code.
        if (module, name) not in self.allowed:
            raise UnsafeFileError(
                f"{self.path} names {module}.{name}, which a {self.kind} never holds: reading it could run code, "
                f"so ember refuses it; {self.fix}"
            )
        return super().find_class(module, name)


def load(path: Path, allowed: Collection[tuple[str, str]], *, kind: str, fix: str, encoding: str = "ASCII"):
    """Unpickle the file at `path`, admitting only the (module, name) globals in `allowed`.

    kind names the format in the error ("CIFAR python batch"), fix says what to do instead.
    Raises UnsafeFileError for any other global; OSError and pickle's own errors pass through.
    """
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, allowed, Path(path), kind, fix, encoding).load()


def loads(
    data: bytes, allowed: Collection[tuple[str, str]], *, source: str, kind: str, fix: str, encoding: str = "ASCII"
):
    """`load` for a pickle held in memory (a row of a database); `source` names where it came from."""
    return _RestrictedUnpickler(io.BytesIO(data), allowed, source, kind, fix, encoding).load()
