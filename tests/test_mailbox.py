"""pipemail.mailbox: dot-locks (owner, stale, live), appends on their own From_ line, pypop's
pending record settling a killed batch; and the commands that go through it."""

import functools
import os
import socket
import subprocess
import time

import faults
import pytest
from smtp_server import free_port

from pipemail import mailbox, transport


@functools.cache  # its From_ line has the time: the same bytes each call, not a second apart
def _msg(n, size=0):
    return mailbox.mbox_bytes([b"Subject: %d\n\nbody %d\n" % (n, n) + b"z" * size + b"\n"], "a@example.org")


# -- dot-locks --------------------------------------------------------------------------------


def test_the_dot_lock_names_its_owner_and_goes_with_the_unlock(tmp_path):
    box = tmp_path / "box"
    locked = mailbox.lock(box)
    try:
        boot = open("/proc/sys/kernel/random/boot_id", "rb").read()
        assert (tmp_path / "box.lock").read_bytes() == b"%d\n%s\n%s" % (
            os.getpid(),
            socket.gethostname().encode(),
            boot,
        )
        assert sorted(os.listdir(tmp_path)) == ["box", "box.lock"]  # the temporary name is gone
    finally:
        mailbox.unlock(locked)
    assert sorted(os.listdir(tmp_path)) == ["box"]


def test_a_dot_lock_of_a_dead_process_is_broken_at_once_with_a_warning(tmp_path):
    box = tmp_path / "box"
    pid = faults.dead_pid()
    (tmp_path / "box.lock").write_bytes(b"%d\n" % pid)  # liblockfile's form: the PID alone
    said = []
    t0 = time.monotonic()
    mailbox.append(box, _msg(1), warn=said.append)
    assert time.monotonic() - t0 < 1
    assert said == ["broke the stale lock %s.lock (its owner, process %d, is gone)" % (box, pid)]
    assert box.read_bytes() == _msg(1)
    assert not (tmp_path / "box.lock").exists()


def test_an_old_dot_lock_without_an_owner_is_broken_by_age(tmp_path):
    box = tmp_path / "box"
    lock = tmp_path / "box.lock"
    lock.write_bytes(b"")  # as a program that writes nothing in it leaves one
    old = time.time() - 7 * 60
    os.utime(lock, (old, old))
    said = []
    mailbox.append(box, _msg(1), warn=said.append)
    assert said == ["broke the stale lock %s (it is 7 minutes old)" % lock]


def test_a_live_dot_lock_is_waited_for_then_the_writer_goes_on_under_fcntl(tmp_path):
    lock = tmp_path / "box.lock"
    owner = subprocess.Popen(["sleep", "30"])
    try:
        lock.write_bytes(b"%d\n" % owner.pid)  # alive
        said = []
        t0 = time.monotonic()
        assert mailbox.dotlock(str(lock), warn=said.append, wait=0.3) is None
        assert 0.3 <= time.monotonic() - t0 < 2
        assert said == ["%s is held by process %d; went on after 0.3 s under the fcntl lock alone" % (lock, owner.pid)]
        assert lock.read_bytes() == b"%d\n" % owner.pid  # never broken
    finally:
        owner.kill()
        owner.wait()
    young = tmp_path / "young.lock"
    young.write_bytes(b"")
    assert mailbox.stale(str(young)) == (None, None)  # no owner, but young: live


def test_a_dot_lock_from_before_a_reboot_is_broken_though_its_pid_is_alive_again(tmp_path):
    """After a reboot a dot-lock's PID may belong to another, live process: the boot id it records
    shows it stale at once (it was waited for 10 s and kept on every run, with a warning)."""
    box = tmp_path / "box"
    lock = tmp_path / "box.lock"
    other = subprocess.Popen(["sleep", "30"])  # a live process that has the PID now
    try:
        lock.write_bytes(b"%d\n%s\n00000000-0000-0000-0000-000000000000\n" % (other.pid, socket.gethostname().encode()))
        said = []
        t0 = time.monotonic()
        mailbox.append(box, _msg(1), warn=said.append)
        assert time.monotonic() - t0 < 1
        assert said == [
            "broke the stale lock %s (its owner, process %d, ran before the host was last started)" % (lock, other.pid)
        ]
        assert box.read_bytes() == _msg(1) and not lock.exists()
        ours = open("/proc/sys/kernel/random/boot_id", "rb").read()
        lock.write_bytes(b"%d\n%s\n%s" % (other.pid, socket.gethostname().encode(), ours))  # this boot's: live
        assert mailbox.stale(str(lock)) == (None, "process %d" % other.pid)
    finally:
        other.kill()
        other.wait()


def test_a_dot_lock_from_another_host_is_judged_by_age_only(tmp_path):
    lock = tmp_path / "box.lock"
    lock.write_bytes(b"%d\nsome-other-host\n" % faults.dead_pid())
    assert mailbox.stale(str(lock))[0] is None
    assert mailbox.stale(str(lock), now=time.time() + 301)[0] == "it is 5 minutes old"


def test_pymail_breaks_a_stale_dot_lock_of_the_dead_letter_at_once(run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    pid = faults.dead_pid()
    (home / "dead.letter.lock").write_bytes(b"%d\n" % pid)
    t0 = time.monotonic()
    r = run(
        "pymail",
        "--transport",
        "smtp://127.0.0.1:%d" % free_port(),
        "-s",
        "x",
        "a@example.org",
        input=b"x\n",
        env={"HOME": str(home)},
    )
    assert time.monotonic() - t0 < 5 and r.returncode == 75
    assert r.stderr.splitlines()[1] == (
        "pymail: broke the stale lock %s/dead.letter.lock (its owner, process %d, is gone)" % (home, pid)
    )
    assert not (home / "dead.letter.lock").exists()


# -- appends on their own From_ line ------------------------------------------------------------


@pytest.mark.parametrize(
    "before,sep",
    [(b"", b""), (b"From x\n\nbody\n\n", b""), (b"From x\n\nbody\n", b"\n"), (b"From x\n\nhalf-wri", b"\n\n")],
)
def test_an_append_starts_on_its_own_from_line(tmp_path, before, sep):
    box = tmp_path / "box"
    box.write_bytes(before)
    mailbox.append(box, _msg(2))
    assert box.read_bytes() == before + sep + _msg(2)


def test_the_dead_letter_after_a_torn_message_starts_on_its_own_from_line(run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    torn = b"From me@example.org Thu Dec  3 07:00:00 2026\nSubject: first\n\nhalf of a li"
    (home / "dead.letter").write_bytes(torn)
    r = run(
        "pymail",
        "--transport",
        "smtp://127.0.0.1:%d" % free_port(),
        "-s",
        "second",
        "b@example.org",
        input=b"second\n",
        env={"HOME": str(home)},
    )
    assert r.returncode == 75
    data = (home / "dead.letter").read_bytes()
    assert data.startswith(torn + b"\n\nFrom ")
    got = transport.read_mbox(home / "dead.letter")
    assert len(got) == 2 and b"Subject: second\n" in got[1][1] and got[1][1].endswith(b"\n\nsecond\n")


def test_the_mbox_transport_after_a_torn_message_starts_on_its_own_from_line(run, tmp_path):
    box = tmp_path / "out.mbox"
    box.write_bytes(b"From x Thu Dec  3 07:00:00 2026\n\nhalf")
    r = run(
        "pymail", "--transport", "mbox:%s" % box, "-s", "s", "b@example.org", input=b"hi\n", env={"HOME": str(tmp_path)}
    )
    assert (r.returncode, r.stderr) == (0, "")
    got = transport.read_mbox(box)
    assert len(got) == 2 and got[0][1] == b"\nhalf\n" and got[1][1].endswith(b"\n\nhi\n")


# -- the pending record ---------------------------------------------------------------------------


def _batch(box, items, tear=None, then=b""):
    """Plan a batch of ``items`` at the end of ``box``, write it (cut at ``tear`` bytes), append ``then``."""
    before = os.path.getsize(box)
    fd = os.open(box, os.O_RDWR | os.O_APPEND)
    try:
        datas = [d for _u, d in items]
        datas[0] = mailbox.separator(fd, before) + datas[0]
        record = mailbox.Pending.plan(
            str(box), os.fstat(fd), before, [(u, d) for (u, _), d in zip(items, datas, strict=True)]
        )
        record = mailbox.Pending.parse(record.dump())  # what the next run reads
        data = b"".join(datas)
        os.write(fd, data if tear is None else data[:tear])
        os.write(fd, then)
        return record, fd, before
    except BaseException:
        os.close(fd)
        raise


def test_settle_records_whole_messages_and_cuts_its_own_torn_tail(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(b"From x\n\nold")  # ends mid-line: the batch starts with two newlines
    items = [("u1", _msg(1)), ("u2", _msg(2, 10_000)), ("u3", _msg(3))]
    end1 = len(b"From x\n\nold") + 2 + len(_msg(1))
    tear = 8192 - len(b"From x\n\nold")  # a page boundary inside u2
    record, fd, before = _batch(box, items, tear=tear)
    said = []
    try:
        assert record.settle(fd, said.append) == ["u1"]
    finally:
        os.close(fd)
    assert box.read_bytes() == b"From x\n\nold\n\n" + _msg(1) and os.path.getsize(box) == end1
    assert said == [
        "cut away %d bytes of a message torn by a killed run at the end of %s; it is fetched again" % (8192 - end1, box)
    ]


def test_settle_leaves_a_torn_message_followed_by_other_mail(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(b"")
    items = [("u1", _msg(1)), ("u2", _msg(2, 10_000))]
    other = b"\n\nFrom procmail Thu Dec  3 07:00:00 2026\n\nother\n\n"
    record, fd, _before = _batch(box, items, tear=4096, then=other)
    before = box.read_bytes()
    said = []
    try:
        assert record.settle(fd, said.append) == ["u1"]
    finally:
        os.close(fd)
    assert box.read_bytes() == before  # not a byte removed
    assert said == [
        "%s holds %d bytes of a message torn by a killed run (from offset %d), followed by mail written since: "
        "left as it is; the message is fetched again" % (box, 4096 - len(_msg(1)), len(_msg(1)))
    ]


def test_settle_keeps_mail_written_after_a_batch_cut_between_messages(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(b"")
    items = [("u1", _msg(1)), ("u2", _msg(2)), ("u3", _msg(3))]
    other = _msg(9)
    record, fd, _before = _batch(box, items, tear=len(_msg(1)) + len(_msg(2)), then=other)
    before = box.read_bytes()
    said = []
    try:
        assert record.settle(fd, said.append) == ["u1", "u2"]
    finally:
        os.close(fd)
    assert box.read_bytes() == before
    assert said == [
        "%s: a killed run stored 2 of its 3 messages whole; what follows them is not its own "
        "and is left as it is; the rest is fetched again" % box
    ]


def test_settle_leaves_a_file_that_was_expunged_or_replaced(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(_msg(7) + _msg(8))
    record, fd, _before = _batch(box, [("u1", _msg(1, 5000))], tear=100)
    os.ftruncate(fd, len(_msg(7)))  # a mail reader expunged a message
    said = []
    try:
        assert record.settle(fd, said.append) == []
    finally:
        os.close(fd)
    assert box.read_bytes() == _msg(7)
    assert said == [
        "%s is shorter than when a killed run began appending to it: left as it is "
        "(what that run fetched is fetched again)" % box
    ]
    record, fd, _before = _batch(box, [("u1", _msg(1))])
    os.close(fd)
    os.rename(box, tmp_path / "old")
    (tmp_path / "old").rename(tmp_path / "box.new")
    box.write_bytes((tmp_path / "box.new").read_bytes())  # rewritten: a new inode, the same bytes
    fd = os.open(box, os.O_RDWR)
    said = []
    try:
        assert record.settle(fd, said.append) == []
    finally:
        os.close(fd)
    assert said == [
        "%s was replaced since a killed run appended to it: left as it is (what that run fetched is fetched again)"
        % box
    ]


def test_settle_leaves_bytes_that_do_not_verify(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(b"")
    record, fd, _before = _batch(box, [("u1", _msg(1, 9000))], tear=4096)
    with open(box, "r+b") as f:  # the same length, other bytes: not ours
        f.seek(100)
        f.write(b"X")
    said = []
    try:
        assert record.settle(fd, said.append) == []
    finally:
        os.close(fd)
    assert os.path.getsize(box) == 4096
    assert said == [
        "%s: a killed run stored 0 of its 1 messages whole; what follows them is not its own "
        "and is left as it is; the rest is fetched again" % box
    ]


def test_chunks_end_at_page_boundaries():
    pieces = list(mailbox.chunks(4000, b"x" * 200_000))
    assert [p for p, _ in pieces] == [4000, 65536, 131072, 196608]
    assert sum(len(b) for _, b in pieces) == 200_000


def test_a_dot_lock_naming_this_process_that_it_did_not_take_is_stale(tmp_path):
    lock = tmp_path / "box.lock"
    lock.write_bytes(b"%d\n" % os.getpid())  # a run before a reboot had the same PID
    assert mailbox.stale(str(lock))[0] == "it names this process, which did not take it"
    said = []
    locked = mailbox.lock(tmp_path / "box", warn=said.append)
    try:
        assert said == ["broke the stale lock %s (it names this process, which did not take it)" % lock]
        assert mailbox.stale(str(lock)) == (None, "process %d" % os.getpid())  # now it holds it: live
    finally:
        mailbox.unlock(locked)


def test_a_dead_letter_of_dev_null_takes_no_dot_lock_and_is_no_error(run, tmp_path):
    r = run(
        "pymail",
        "--transport",
        "smtp://127.0.0.1:%d" % free_port(),
        "-s",
        "x",
        "a@example.org",
        input=b"x\n",
        env={"HOME": str(tmp_path), "DEAD": "/dev/null"},
    )
    assert r.returncode == 75, r.stderr
    assert r.stderr.endswith(
        "pymail: the message is kept in /dev/null for a@example.org (pymail --resend /dev/null sends it again)\n"
    )
    assert not os.path.exists("/dev/null.lock")


# -- streams: mboxrd quoting across chunk boundaries, appends and Maildir deliveries from chunks ----------


def _cuts(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


QUOTING_CASES = [
    (b"From a\n", b">From a\n"),
    (b">From a\n", b">>From a\n"),
    (b">>>From a\nx\n", b">>>>From a\nx\n"),
    (b"x From a\n", b"x From a\n"),
    (b"From\n", b"From\n"),
    (b">Fro\nm a\n", b">Fro\nm a\n"),
    (b"a\nFrom b\n>From c\nFromage\nd", b"a\n>From b\n>>From c\nFromage\nd\n"),
    (b"", b""),
    (b"no newline", b"no newline\n"),
    (b"line\n" * 3 + b"From the end", b"line\n" * 3 + b">From the end\n"),
]


@pytest.mark.parametrize(("message", "expected"), QUOTING_CASES)
def test_quoted_is_the_same_whatever_the_chunks(message, expected):
    for size in range(1, len(message) + 2):
        assert b"".join(mailbox.quoted(_cuts(message, size))) == expected, size
    assert mailbox.quote(message) + (b"" if message.endswith(b"\n") or not message else b"\n") == expected


def test_quoted_at_every_offset_around_a_buffer():
    """A From_ line starting at each offset around a 64 KiB chunk boundary is quoted once, exactly."""
    for offset in range(65536 - 8, 65536 + 8):
        filler = b"x" * (offset - 1) + b"\n"
        message = filler + b">From here\nFrom there\n"
        got = b"".join(mailbox.quoted(_cuts(message, 65536)))
        assert got == filler + b">>From here\n>From there\n", offset


def test_mbox_chunks_and_mbox_bytes_agree():
    msg = b"Subject: x\n\nFrom me\nbody"
    whole = mailbox.mbox_bytes([msg], "a@b")
    streamed = b"".join(mailbox.mbox_chunks(_cuts(msg, 3), "a@b"))
    assert whole[whole.index(b"\n") :] == streamed[streamed.index(b"\n") :]
    assert whole.endswith(b"\n>From me\nbody\n\n")


def test_append_takes_chunks_and_cuts_them_away_when_the_source_fails(tmp_path):
    box = tmp_path / "box"
    mailbox.append(str(box), mailbox.mbox_chunks([b"Subject: one\n\nbody\n"], "a@b"))
    before = box.read_bytes()

    def failing():
        yield b"From x@y Thu Jan  1 00:00:00 1970\nSubject: two\n\n"
        yield b"half of it"
        raise OSError(5, "Input/output error")

    with pytest.raises(mailbox.IOFailure):
        mailbox.append(str(box), failing())
    assert box.read_bytes() == before

    class Gone(Exception):
        pass

    def interrupted():
        yield b"From x@y Thu Jan  1 00:00:00 1970\n"
        raise Gone

    with pytest.raises(Gone):
        mailbox.append(str(box), interrupted())
    assert box.read_bytes() == before
    assert not (tmp_path / "box.lock").exists()


def test_deliver_maildir_from_chunks(tmp_path):
    top = tmp_path / "Maildir"
    path = mailbox.deliver_maildir(str(top), [b"Subject: x\n", b"\n", b"body\n"])
    assert os.path.dirname(path) == str(top / "new")
    assert open(path, "rb").read() == b"Subject: x\n\nbody\n"
    assert os.stat(path).st_mode & 0o777 == 0o600
    other = mailbox.deliver_maildir(str(top), [b"two\n"])
    assert other != path
    assert sorted(os.listdir(top / "tmp")) == []


def test_deliver_maildir_leaves_nothing_in_tmp_when_the_source_fails(tmp_path):
    top = tmp_path / "Maildir"

    def failing():
        yield b"Subject: x\n\n"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mailbox.deliver_maildir(str(top), failing())
    assert os.listdir(top / "tmp") == [] and os.listdir(top / "new") == []


# -- reading: one split rule, streamed ------------------------------------------------------------------------


def _reference(data):
    """The split rule by regex on the whole file: From_ at the start or after a blank line."""
    import re

    starts = [
        m.start()
        for m in re.finditer(rb"(?m)^From ", data)
        if m.start() == 0 or data[m.start() - 2 : m.start()] == b"\n\n"
    ]
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[start:end]
        nl = chunk.find(b"\n")
        body = chunk[nl + 1 :] if nl >= 0 else b""
        if body.endswith(b"\n\n") or (body == b"\n"):
            body = body[:-1]
        out.append((chunk[:nl] if nl >= 0 else chunk, re.sub(rb"(?m)^>(>*From )", rb"\1", body)))
    return out


def _read_all(data, block, monkeypatch):
    import io

    monkeypatch.setattr(mailbox, "READ_BLOCK", block)
    return [(line, b"".join(chunks)) for line, chunks in mailbox.mbox_messages(io.BytesIO(data))]


MBOXES = [
    b"",
    b"From a\n",
    b"From a\nbody\n",
    b"From a\nbody\n\nFrom b\nsecond\n",
    b"From a\nx\nFrom inside\n\nFrom b\ny",
    b"From a\n\n\nFrom b\n\n",
    b"From a\n>From q\n>>From qq\n>Fromage\n\nFrom b\n\n\n\n",
    b"From a\n\nFrom b\n\nFrom c\n",
    b"From a\nFrom b\n",
    b"From a\nline\n\n\nFrom b\nlast line without newline",
    b"From a\n" + b"y" * 50 + b"\n\nFrom b\n" + b">" * 30 + b"From z\n",
]


@pytest.mark.parametrize("data", MBOXES)
def test_mbox_messages_split_as_the_rule_says_whatever_the_block_size(data, monkeypatch):
    expected = _reference(data)
    for block in (1, 2, 3, 5, 7, 11, 64, 1 << 20):
        assert _read_all(data, block, monkeypatch) == expected, block


def test_mbox_messages_round_trip_what_append_wrote(tmp_path, monkeypatch):
    import random

    rng = random.Random(11)
    box = tmp_path / "box"
    sent = []
    for n in range(40):
        lines = [
            rng.choice([b"", b"From x", b">From y", b">>From z", b"text", b"From", b".", b"x" * rng.randrange(200)])
            for _ in range(rng.randrange(12))
        ]
        msg = b"Subject: %d\n\n" % n + b"\n".join(lines) + rng.choice([b"", b"\n", b"\n\n"])
        sent.append(msg if msg.endswith(b"\n") else msg + b"\n")
        mailbox.append(str(box), mailbox.mbox_chunks([msg], "s%d@x" % n))
    for block in (3, 17, 4096):
        got = _read_all(box.read_bytes(), block, monkeypatch)
        assert [b for _l, b in got] == sent, block
        assert [line.split()[1] for line, _b in got] == [b"s%d@x" % n for n in range(40)]


def test_mbox_messages_is_streamed(tmp_path):
    """A message of 64 MiB is read with the memory of a few blocks (the chunks, not the message)."""
    import tracemalloc

    box = tmp_path / "big"
    with open(box, "wb") as f:
        f.write(b"From a\nSubject: big\n\n")
        line = b"A" * 76 + b"\n"
        for _ in range(64):
            f.write(line * ((1 << 20) // len(line)))
        f.write(b"\nFrom b\nsmall\n")
    tracemalloc.start()
    try:
        with open(box, "rb") as f:
            sizes = [(line, sum(len(c) for c in chunks)) for line, chunks in mailbox.mbox_messages(f)]
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [line for line, _n in sizes] == [b"From a", b"From b"]
    assert sizes[1][1] == len(b"small\n")
    assert peak < 8 << 20


def test_mbox_messages_refuses_what_is_no_mbox():
    import io

    with pytest.raises(mailbox.DataError if hasattr(mailbox, "DataError") else Exception, match="not an mbox"):
        list(mailbox.mbox_messages(io.BytesIO(b"Subject: x\n\nbody\n"), "mail.eml"))


def test_chunk_stream_reads_chunks_as_a_file():
    import io

    stream = io.BufferedReader(mailbox.ChunkStream([b"ab", b"", b"c\nd", b"e\n"]))
    assert stream.readline() == b"abc\n"
    assert stream.read() == b"de\n"


# -- iterating inputs (pyunshar's) -------------------------------------------------------------


def test_iter_messages_kinds_labels_and_numbers(tmp_path):

    from pipemail.mailbox import iter_messages

    box = tmp_path / "box"
    box.write_bytes(b"From a x\nSubject: 1\n\none\n\nFrom b x\nSubject: 2\n\ntwo\nFrom c in the body\n")
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: s\n\nbody\n")
    plain = tmp_path / "p"
    plain.write_bytes(b"#!/bin/sh\r\nexit 0\r\n")
    got = [(i.kind, i.label, i.number, i.stream.read()) for i in iter_messages([box, eml, plain])]
    assert got == [
        ("message", str(box), 1, b"Subject: 1\n\none\n"),
        ("message", str(box), 2, b"Subject: 2\n\ntwo\nFrom c in the body\n"),
        ("message", str(eml), None, b"Subject: s\n\nbody\n"),
        ("text", str(plain), None, b"#!/bin/sh\nexit 0\n"),  # CRLF lines read as LF
    ]
    r, w = os.pipe()
    os.write(w, b"From a x\r\nSubject: 1\r\n\r\none\r\n\r\nFrom b x\r\nSubject: 2\r\n\r\ntwo\r\n")
    os.close(w)
    with open(r, "rb") as pipe:
        got = [(i.label, i.number, i.stream.read()) for i in iter_messages([("stdin", pipe)])]
    assert got == [("stdin", 1, b"Subject: 1\n\none\n"), ("stdin", 2, b"Subject: 2\n\ntwo\n")]


def test_maildir_messages_in_delivery_order_opened_one_at_a_time(tmp_path):
    from pipemail.mailbox import maildir_messages

    top = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (top / sub).mkdir(parents=True)
    (top / "cur" / "2:2,S").write_bytes(b"second\n")
    (top / "new" / "1").write_bytes(b"first\n")
    (top / "new" / "3").write_bytes(b"third\n")
    (top / "new" / ".hidden").write_bytes(b"no\n")
    (top / "tmp" / "0").write_bytes(b"in progress\n")
    (top / "cur" / "4").mkdir()
    seen = []
    for path, f in maildir_messages(str(top)):
        seen.append((os.path.relpath(path, top), f.read()))
        previous = f
    assert previous.closed
    assert seen == [("new/1", b"first\n"), ("cur/2:2,S", b"second\n"), ("new/3", b"third\n")]


def test_prefixed_and_crlf_to_lf_streams():
    import io as io_

    from pipemail.mailbox import CRLFToLF, Prefixed

    assert io_.BufferedReader(Prefixed(b"head ", io_.BytesIO(b"rest"))).read() == b"head rest"
    data = b"a\r\nb\r" + b"\nc\r\r\n\r"
    for step in (1, 2, 3, 100):
        chunks = [data[i : i + step] for i in range(0, len(data), step)]

        class Reads(io_.RawIOBase):
            def __init__(self, chunks):
                self.chunks = chunks

            def readable(self):
                return True

            def read(self, n=-1):
                return self.chunks.pop(0) if self.chunks else b""

        assert io_.BufferedReader(CRLFToLF(Reads(chunks))).read() == b"a\nb\nc\r\n\r"
