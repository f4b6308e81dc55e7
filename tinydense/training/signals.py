"""Ctrl-C and SIGTERM during a run: finish the batch, save, stop.

The first signal only sets the trainer's ``stop_requested`` (the loop checks it
after each batch and saves before it stops); a second one stops at once, without
saving (KeyboardInterrupt for Ctrl-C, exit status 128 + the signal for SIGTERM).
"""
from __future__ import annotations

import signal
import sys
import threading


def stop_on_signals(trainer) -> dict:
    """Install the handlers for ``trainer``; returns the previous ones for
    :func:`restore_handlers` (none outside the main thread, where Python allows none)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum, frame):
        if trainer.stop_requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        trainer.stop_requested, trainer.stop_signal = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send it again"
        print(f"\n{name}: saving after this batch ({again} to stop at once without saving)",
              file=sys.stderr, flush=True)
    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def restore_handlers(handlers) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
