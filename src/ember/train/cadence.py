"""When a periodic action of the loop is due: logging, validation, checkpoints.

Each action owns its cadence, so the loop asks "is it due?" and reads top to bottom instead of
carrying the arithmetic of every setting inline.
"""

import time


class Every:
    """Due every `steps` optimizer steps, at the end of every `epochs` epochs, or when `minutes`
    have passed since it last ran (0 turns that clock off)."""

    def __init__(self, steps: int = 0, epochs: int = 0, minutes: float = 0.0, clock=time.monotonic):
        self.steps, self.epochs, self.seconds = steps, epochs, 60.0 * minutes
        self.clock = clock
        self.last = clock()

    def at_step(self, step: int) -> bool:
        if self.steps and step % self.steps == 0:
            return True
        return bool(self.seconds) and self.clock() - self.last >= self.seconds

    def at_epoch_end(self, epoch: int) -> bool:
        return bool(self.epochs) and epoch % self.epochs == 0

    def ran(self) -> None:
        """The action just ran: the clock starts again."""
        self.last = self.clock()
