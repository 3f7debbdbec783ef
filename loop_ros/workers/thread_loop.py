"""The one loop of the nodes' worker threads (plan worker, model loader, training worker).

A worker waits on its condition until it has work or is stopped, takes the work under the lock
(so the other threads, which hand work over through ``_cond``, never see half a handover), and
does it outside the lock. An exception in one turn is handed to ``_failed`` and the thread goes
on: a worker thread must outlive any bad input.
"""
from __future__ import annotations

import threading
from typing import Any


class ThreadLoop:
    """Subclasses implement ``_has_work`` and ``_take`` (under the lock), ``_work`` and ``_failed``."""

    def __init__(self, name: str, poll_s: float | None = None):
        self._cond = threading.Condition()
        self._stopping = False
        self._poll_s = poll_s  # wake at least this often even without work (None: only when notified)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Look for work now (something changed that ``_has_work`` reads)."""
        with self._cond:
            self._cond.notify()

    def request_stop(self) -> None:
        """Ask the thread to stop after its current turn, without waiting."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop the thread and wait at most ``timeout_s`` for it; False while it still runs."""
        self.request_stop()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # ------------------------------------------------------------ the thread
    def _loop(self) -> None:
        self._on_start()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._has_work(), timeout=self._poll_s)
                if self._stopping:
                    return
                work = self._take()
            try:
                self._work(work)
            except Exception as error:  # noqa: BLE001 - the thread must live on
                self._failed(error)
            finally:
                self._turn_done()

    def _on_start(self) -> None:
        """Runs first in the thread (e.g. lower its priority)."""

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _take(self) -> Any:
        """Under the lock: take the work ``_has_work`` saw."""
        raise NotImplementedError

    def _work(self, work: Any) -> None:
        raise NotImplementedError

    def _failed(self, error: Exception) -> None:
        raise NotImplementedError

    def _turn_done(self) -> None:
        """Runs after every turn, failed or not."""
