"""SIGTERM ends learec's work as Ctrl-C does.

Schedulers, `timeout`, `kill` and the end of a shell session stop a process with SIGTERM, whose default
action ends it on the spot: no stage records what it spent (learec.usage), no file being written is
cleaned up, and a grid's cell processes go on without it. Raised as :class:`Terminated` (a
KeyboardInterrupt) instead, it unwinds like Ctrl-C: every stage, atomic write and grid sees it. The first
SIGTERM starts that stop and later ones are ignored, so that a second signal (a grid passing the stop on to
its cells, a repeated `kill`) cannot cut the clean-up short; SIGKILL still ends the process at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one orderly stop: the next SIGTERM does not interrupt it
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the handler before it is
    restored after (where Python can name it). Outside the main thread (where Python cannot set handlers)
    it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler set from C, which Python cannot put back
            signal.signal(signal.SIGTERM, previous)
