"""`track=[csv]`: metrics.csv in the run directory, one row per record, for spreadsheets and pandas.

Columns are step, epoch, split and every metric seen so far; a metric that appears later (the
first validation's accuracy) rewrites the file with the wider header, so every row has every column.
"""

import csv
import math

from ember.track import TrackContext

FIXED = ["step", "epoch", "split"]


class CsvLogger:
    name = "csv"

    def __init__(self, ctx: TrackContext):
        self.path = ctx.path / "metrics.csv"
        # On resume the kept records are the whole history: rewrite the file from them.
        self.rows: list[dict] = list(ctx.kept or [])
        self.columns: list[str] = []
        self._file = None
        self._widen(self.rows)
        self._rewrite()

    def _widen(self, rows: list[dict]) -> bool:
        new = [k for r in rows for k in r if k not in FIXED and k not in self.columns]
        self.columns += list(dict.fromkeys(new))
        return bool(new)

    def _rewrite(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=FIXED + self.columns, extrasaction="ignore")
        self._writer.writeheader()
        for row in self.rows:
            self._writer.writerow(_clean(row))
        self._file.flush()

    def log(self, record: dict) -> None:
        self.rows.append(record)
        if self._widen([record]):
            self._rewrite()
        else:
            self._writer.writerow(_clean(record))
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _clean(record: dict) -> dict:
    return {k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in record.items()}
