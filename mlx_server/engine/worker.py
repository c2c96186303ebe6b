"""A component that loads a model and then serves from its own daemon thread."""

from __future__ import annotations

import threading
import time


class BackgroundWorker:
    """Lifecycle shared by the generation and embedding engines: start, ready, shutdown.

    Subclasses implement `_run`, which loads (setting `_state` to "ok" or "error")
    and then loops until `_stop` is set, sleeping on `_wake` when idle.
    """

    def __init__(self, thread_name: str):
        self._state = "loading"
        self._error = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):  # type: ignore[no-untyped-def]  # returns the subclass
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self._state == "ok"

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state == "loading":
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return self.ready
