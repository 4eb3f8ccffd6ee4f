"""Progress for long stage work: items done, rate, time left.

Written to stderr. On a terminal one line is rewritten in place; elsewhere (CI logs,
containers without a tty) a full line is printed at most every `interval` seconds, so
logs stay readable. No third-party dependency: this runs in every env.
"""

import os
import sys
import time


def _fmt_seconds(seconds):
    seconds = round(seconds)
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, (seconds % 3600) // 60)
    if seconds >= 60:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


class Progress(object):
    """Counts finished items and reports them; use as a context manager."""

    def __init__(self, total, label, unit="images", interval=None, stream=None):
        self.total = int(total)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        # ZOOBOX_TTY: the host (zoobox) reads our output through a pipe but prints to a terminal.
        self.tty = (hasattr(self.stream, "isatty") and self.stream.isatty()) or bool(
            os.environ.get("ZOOBOX_TTY")
        )
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)

    def update(self, n=1):
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._emit(now)

    def line(self, now=None):
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        text = "%s: %d/%d %s, %.1f %s/s" % (
            self.label,
            self.done,
            self.total,
            self.unit,
            rate,
            self.unit,
        )
        if 0 < self.done < self.total and rate > 0:
            text += ", %s left" % _fmt_seconds((self.total - self.done) / rate)
        elif self.done >= self.total:
            text += ", %s" % _fmt_seconds(elapsed)
        return text

    def _emit(self, now):
        if self.tty:
            self.stream.write("\r" + self.line(now) + "\033[K")
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self, ok=True):
        if self.tty:
            self.stream.write("\n" if self.done else "")
        elif ok and self.done and self._last == 0.0:
            self._emit(time.monotonic())
        self.stream.flush()
