"""What the user sees: a rich progress bar on a terminal, plain lines otherwise, a final table."""

import sys
import time

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


class Console:
    """`mode`: bar (rich progress), lines (a line per logged record), none (neither), or auto.

    Messages and the final table are printed in every mode.
    """

    def __init__(self, mode: str = "auto", stream=None):
        self.out = RichConsole(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        if mode == "auto":
            # A notebook gets the bar too (rich draws it in the cell, through ipywidgets).
            mode = "bar" if self.out.is_terminal or self.out.is_jupyter else "lines"
        self.mode = mode
        self._progress: Progress | None = None
        self._task = None
        self._last_refresh = 0.0

    def start(self, total_steps: int, max_epochs: int) -> None:
        self._max_epochs = max_epochs
        self._total = total_steps
        if self.mode == "bar":
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} samples/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.out,
                # No refresh thread: on a 2-core machine it competes with torch's worker threads
                # and made training several times slower. The loop refreshes at most 10 times a second.
                auto_refresh=False,
            )
            self._task = self._progress.add_task(
                "train", total=total_steps, epoch=1, epochs=max_epochs, loss="-", speed="-"
            )
            self._progress.start()

    def step(self, step: int, epoch: int) -> None:
        if self._progress is not None:
            now = time.monotonic()
            if now - self._last_refresh >= 0.1 or step == self._total:
                self._progress.update(self._task, completed=step, epoch=epoch)
                self._progress.refresh()
                self._last_refresh = now

    def show(self, record: dict) -> None:
        """A logged record: train intervals update the bar; validations print a line."""
        split = record.get("split")
        if self._progress is not None and split == "train":
            self._progress.update(self._task, loss=_fmt(record["loss"]), speed=f"{record.get('samples_per_s', 0):.0f}")
            return
        if self.mode == "none":
            return
        skip = ("step", "epoch", "split")
        values = "  ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in skip and v is not None)
        if split == "train":
            head = f"epoch {record['epoch']}/{self._max_epochs} step {record['step']}/{self._total}"
        else:
            head = f"epoch {record['epoch']}/{self._max_epochs} {split}"
        self.print(f"{head}  {values}")

    def print(self, text) -> None:
        """Text as it is: a message holds user strings (paths, column and run names), and a '[/y]'
        in one must print, not raise rich's MarkupError. Rich objects (tables) print as they are."""
        if isinstance(text, str):
            self.out.print(text, markup=False)
        else:
            self.out.print(text)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def table(self, title: str, metrics: dict[str, float]) -> None:
        """Metrics named `split/metric` as a table: one row per metric, one column per split."""
        splits = list(dict.fromkeys(k.split("/", 1)[0] for k in metrics))
        names = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics))
        # Every cell is markup to rich: the run's path, the metric and column names are escaped.
        table = Table(title=escape(title), title_justify="left")
        table.add_column("metric")
        for s in splits:
            table.add_column(escape(s), justify="right")
        for n in names:
            table.add_row(escape(n), *[_fmt(metrics[f"{s}/{n}"]) if f"{s}/{n}" in metrics else "" for s in splits])
        self.out.print(table)
