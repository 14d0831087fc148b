"""A loopback server that stalls: for the timeouts of pymail's SMTP and pypop's POP3 clients.

aiosmtpd and Dovecot answer in time; the faults here are a peer that stops
answering after some replies, stops reading a message, or drips its answer
so slowly that it never ends.  A real listening socket on 127.0.0.1.
"""

import socket
import threading
import time


class StallingServer:
    """Sends ``greeting``, answers each line it reads with the next of ``replies``, then stalls.

    With ``read_body`` (the default), after a last reply of ``354`` it reads the
    message up to its ``.`` line before stalling (the server that never says 250);
    without it, it reads nothing more (a server that stops reading).  With
    ``drip``, an iterable of byte strings, it sends nothing else: one piece every
    ``interval`` seconds, until closed.  ``got`` holds what it read.
    """

    def __init__(self, greeting=b"", replies=(), *, read_body=True, drip=None, interval=0.1):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.greeting, self.replies, self.read_body = greeting, list(replies), read_body
        self.drip, self.interval = drip, interval
        self.stop = threading.Event()
        self.got = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                if self.drip is not None:
                    for piece in self.drip:
                        if self.stop.is_set():
                            return
                        conn.sendall(piece)
                        time.sleep(self.interval)
                else:
                    self._answer(conn)
            except OSError:
                return
            self.stop.wait(60)  # stalls: reads nothing more, answers nothing

    def _answer(self, conn):
        conn.sendall(self.greeting)
        f = conn.makefile("rb")
        line = b""
        for reply in self.replies:
            line = f.readline()
            self.got += line
            if not line:
                return
            conn.sendall(reply)
        if self.read_body and self.replies and self.replies[-1].startswith(b"354"):  # the message, to its end
            while line and line != b".\r\n":
                line = f.readline()
                self.got += line

    def close(self):
        self.stop.set()
        self.sock.close()
