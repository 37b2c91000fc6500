"""A limit on failed authentication per client address: failed logins and wrong bearer tokens.

Each address may fail ``limit`` times within ``window_s``; past that, every token it sends
(right or wrong) is answered 429 with ``Retry-After`` until its oldest failure leaves the
window, so a token cannot be guessed at the speed of the network. Behind a reverse proxy
the address is the proxy's unless uvicorn trusts its forwarded headers.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

MAX_ADDRESSES = 100_000  # addresses tracked at once (the least recently failing go first)


class FailureLimit:
    """Failures per address in a sliding window; thread-safe."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return None
            while times and now - times[0] > self.window_s:
                times.popleft()
            if len(times) < self.limit:
                return None
            return max(1, math.ceil(self.window_s - (now - times[0])))

    def failed(self, address: str) -> None:
        """Record one failure of ``address``."""
        with self._lock:
            times = self._failures.pop(address, None) or deque()
            times.append(time.monotonic())
            while len(times) > self.limit:
                times.popleft()
            self._failures[address] = times
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
