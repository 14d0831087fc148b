"""Progress bars on standard error, drawn only when it is a terminal.

A command makes one with :func:`bar` (``None`` when standard error is not a
terminal, so a pipeline or a cron job gets nothing) and hands it to the core
as a plain callable: ``advance(n)`` adds ``n`` done.  :func:`reader` wraps a
binary stream so that reading it advances a bar.  Nothing is drawn during the
first half second (``PIPEMAIL_PROGRESS=SECONDS`` changes that; ``never`` turns
bars off), then at most ten times a second; :meth:`Bar.close` draws the last
state and clears the line,
so what the command prints afterwards starts on a clean line.
"""

import os
import time

DELAY = 0.5
INTERVAL = 0.1
_active = []  # the bar now on the screen, so that a warning can clear its line first


def _delay(env):
    setting = env.get("PIPEMAIL_PROGRESS", "").strip().lower()
    if setting in ("never", "no", "off"):
        return None
    try:
        return max(0.0, float(setting)) if setting else DELAY
    except ValueError:
        return DELAY


def bar(prog, label, total=None, unit="bytes", fd=2, env=None):
    """A :class:`Bar` on ``fd`` when it is a terminal, else ``None``."""
    env = os.environ if env is None else env
    delay = _delay(env)
    if delay is None or env.get("TERM") == "dumb":
        return None
    try:
        if not os.isatty(fd):
            return None
    except OSError:
        return None
    return Bar(prog, label, total, unit, fd, delay)


def _human(n):
    if n < 1024:
        return "%d B" % n
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1024.0
        if n < 1024 or unit == "TB":
            return "%.1f %s" % (n, unit)


class Bar:
    """``prog: label  42% [#######-----------]  84.0 MB/200.0 MB  51.2 MB/s``"""

    def __init__(self, prog, label, total=None, unit="bytes", fd=2, delay=DELAY):
        self.prog, self.label, self.total, self.unit, self.fd = prog, label, total, unit, fd
        self.done = 0
        self.start = time.monotonic()
        self.next = self.start + delay
        self.shown = False

    def __call__(self, n=1):
        self.done += n
        now = time.monotonic()
        if now >= self.next:
            self.next = now + INTERVAL
            self.draw(now)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _amount(self, n):
        return _human(n) if self.unit == "bytes" else "%d" % n

    def text(self, now=None, width=80):
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-6)
        if self.total:
            amount = "%s/%s" % (self._amount(self.done), self._amount(self.total))
        else:
            amount = self._amount(self.done)
        if self.unit != "bytes":
            amount += " " + self.unit
        rate = self.done / elapsed
        speed = ("%s/s" % _human(rate)) if self.unit == "bytes" else ("%.1f/s" % rate)
        tail = "  %s  %s" % (amount, speed)
        if not self.total:
            return (self._head(width - 1 - len(tail)) + tail)[: width - 1]
        fraction = min(1.0, self.done / self.total)
        pct = " %3d%% " % int(fraction * 100)
        room = width - 1 - len(tail) - len(pct) - 2
        head = self._head(max(len(self.prog) + 10, (width - 1) * 2 // 5))
        cells = max(0, room - len(head))
        filled = int(cells * fraction)
        return (head + pct + "[" + "#" * filled + "-" * (cells - filled) + "]" + tail)[: width - 1]

    def _head(self, room):
        """``prog: label``, the label cut from the front to fit ``room`` (its end says most)."""
        head = "%s: %s" % (self.prog, self.label)
        if len(head) <= room:
            return head
        keep = max(1, room - len(self.prog) - 5)
        return "%s: ...%s" % (self.prog, self.label[-keep:])

    def draw(self, now=None):
        try:
            width = os.get_terminal_size(self.fd).columns or 80  # a pty nobody sized says 0
        except OSError:
            width = 80
        if not _active or _active[-1] is not self:
            _active.append(self)
        self.shown = True
        self._write("\r" + self.text(now, max(width, 20)) + "\x1b[K")

    def _write(self, text):
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError:
            pass

    def clear(self):
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False

    def interrupt(self):
        """Off the line for another message; drawn again at the next advance (if it was on screen)."""
        if self.shown:
            self.clear()
            self.next = 0.0

    def close(self):
        if self.shown:  # the last state, then a clean line
            self.draw()
        self.clear()
        if self in _active:
            _active.remove(self)


def clear_line():
    """Before a warning: take the bar on the screen off its line (it comes back on its next draw)."""
    for b in _active:
        b.interrupt()


class _Counting:
    """A binary stream whose reads advance a bar."""

    def __init__(self, stream, advance):
        self._stream = stream
        self._advance = advance

    def read(self, n=-1):
        data = self._stream.read(n)
        self._advance(len(data))
        return data

    def readinto(self, b):
        n = self._stream.readinto(b)
        if n:
            self._advance(n)
        return n

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stream.close()


def reader(stream, advance):
    """``stream`` itself when ``advance`` is None, else a wrapper counting what is read."""
    return stream if advance is None else _Counting(stream, advance)


def file_size(stream):
    """The size of a regular file behind ``stream``, else None (a pipe: no percentage)."""
    import stat

    try:
        st = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
