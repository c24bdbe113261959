"""Helpers shared by the training-loop tests."""

from ember.track.console import Console


class RecordingConsole(Console):
    """A silent console that keeps every record the trainer shows (train intervals, validations)."""

    def __init__(self):
        super().__init__("none")
        self.records: list[dict] = []

    def show(self, record: dict) -> None:
        self.records.append(dict(record))

    def split(self, name: str) -> list[dict]:
        return [r for r in self.records if r["split"] == name]
