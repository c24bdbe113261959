"""Preemption: turn SIGTERM / SIGINT / SIGUSR1 into a request the loop honours between steps.

The loop finishes the current optimizer step, writes a checkpoint and exits with
EXIT_PREEMPTED, so a scheduler (SLURM sends SIGUSR1 or SIGTERM before killing a job) never costs
more than one step. A second SIGINT exits at once. SIGUSR2 asks for a checkpoint and continues.
"""

import signal
import threading

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class SignalWatch:
    def __init__(self):
        self.stop: str | None = None  # name of the signal that asked to stop
        self.save_now = False
        self._previous: dict = {}

    def __enter__(self) -> "SignalWatch":
        if threading.current_thread() is not threading.main_thread():
            return self  # handlers can only be installed from the main thread
        for name in STOP_SIGNALS:
            self._install(name, self._on_stop)
        self._install("SIGUSR2", self._on_save)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _install(self, name: str, handler) -> None:
        sig = getattr(signal, name, None)
        if sig is not None:
            self._previous[sig] = signal.signal(sig, handler)

    def _on_stop(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl-C: leave now
        self.stop = self.stop or name

    def _on_save(self, signum, frame) -> None:
        self.save_now = True
