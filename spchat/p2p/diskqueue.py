"""One shared file's disk work, off the reactor thread and in order.

Reading, writing and hashing pieces block: on a slow or busy disk one call
can take milliseconds or seconds, and on the reactor thread that stalls
every chat line of the client and every other peer it serves.  Each file
gets a ``DiskQueue``: its jobs run in the reactor's thread pool one at a
time, in the order they were asked for, so a piece is written before it is
read back, and nothing touches the file once the queue is closed.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer, threads
from twisted.python.failure import Failure

from spchat.terminal import SafeLogger

log = SafeLogger()


class DiskClosed(Exception):
    """The file was closed before this job could run: it never will."""


class DiskQueue:
    def __init__(self, reactor):
        self.reactor = reactor
        self._waiting: deque = deque()  # (function, args, Deferred)
        self._running = False
        self.closed = False

    def run(self, function, *args) -> defer.Deferred:
        """``function(*args)`` in a worker thread, after the jobs asked
        before it: a Deferred of its result, on the reactor thread."""
        d: defer.Deferred = defer.Deferred()
        if self.closed:
            d.errback(DiskClosed())
        else:
            self._waiting.append((function, args, d))
            self._next()
        return d

    def _next(self) -> None:
        if self._running or not self._waiting:
            return
        function, args, d = self._waiting.popleft()
        self._running = True
        job = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                        function, *args)
        job.addBoth(self._done, d)

    def _done(self, result, d: defer.Deferred) -> None:
        self._running = False
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
        self._next()

    def close(self, last=None) -> defer.Deferred:
        """No more jobs: those not started are dropped (DiskClosed), then
        ``last()`` (closing the file) runs once the running one is done.
        Fires when it has; never fails (a failure is logged)."""
        if self.closed:
            return defer.succeed(None)
        dropped = list(self._waiting)
        self._waiting.clear()
        d: defer.Deferred = defer.Deferred()
        if last is not None:
            self._waiting.append((last, (), d))
        self.closed = True
        for _, _, job in dropped:
            job.errback(DiskClosed())
        if last is None:
            d.callback(None)
        else:
            self._next()
        d.addErrback(lambda f: log.warn("closing a shared file: {error}",
                                        error=f.getErrorMessage()))
        return d
