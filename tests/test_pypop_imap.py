"""pypop over IMAP, through the real command against a real Dovecot imapd on loopback (tests/imapserver.py)."""

import os

import imapserver
import pytest

from pipemail import transport

imap_dovecot = imapserver.imap_dovecot


def msg(n, folder=b"INBOX"):
    return (
        b"From: sender@example.org\nTo: pmtest@example.org\nSubject: message %d of %s\n"
        b"Message-ID: <m%d-%s@pipemail.test>\n\nbody of %d\nFrom the start of a line\n>From quoted\n"
        % (n, folder, n, folder.replace(b" ", b"_"), n)
    )


@pytest.fixture
def imap(run, imap_dovecot, tmp_path):
    imap_dovecot.clear()
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": imap_dovecot.password,
    }

    def _imap(*args, host=None, scheme="imaps", **kw):
        host = host or imap_dovecot.host
        port = imap_dovecot.ssl_port if scheme == "imaps" else imap_dovecot.port
        srv = "%s://%s:%d" % (scheme, "[%s]" % host if ":" in host else host, port)
        return run(
            "pypop",
            "--server",
            srv,
            "--user",
            imap_dovecot.user,
            "--tls-trust-file",
            imap_dovecot.ca_file,
            *args,
            env=env,
            **kw,
        )

    _imap.server = imap_dovecot
    return _imap


def _file(tmp_path, data):
    path = tmp_path / "out.mbox"
    path.write_bytes(data)
    return path


def stored(path):
    return [body for _from, body in transport.read_mbox(path)]


def test_fetch_into_an_mbox_then_nothing_new(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(1000)])
    box = tmp_path / "inbox"
    r = imap("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr, r.stdout) == (0, "", b"")
    assert stored(box) == [msg(n) for n in range(1000)]  # in UID order, From lines quoted and back
    size = box.stat().st_size
    r = imap("-v", "fetch", "--mbox", str(box))
    assert r.returncode == 0 and "pypop: 0 messages fetched" in r.stderr
    assert "UID FETCH" not in r.stderr  # UIDNEXT said nothing is new: no FETCH at all
    assert box.stat().st_size == size
    server.put_many([msg(1000)])
    r = imap("-v", "fetch", "--mbox", str(box))
    assert r.returncode == 0 and "pypop: 1 message fetched" in r.stderr
    assert stored(box)[-1] == msg(1000) and len(stored(box)) == 1001
    assert len(server.folder_messages()) == 1001  # kept on the server
    assert all("\\Seen" not in f for f in server.flags().values())  # BODY.PEEK: nothing marked read


def test_maildir_mda_and_stdout_sinks(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    md = tmp_path / "Maildir"
    r = imap("fetch", "--maildir", str(md))
    assert r.returncode == 0, r.stderr
    assert sorted((md / "new" / n).read_bytes() for n in os.listdir(md / "new")) == [msg(n) for n in range(3)]
    server.put_many([msg(3)])
    out = tmp_path / "mda"
    r = imap("fetch", "--mda", "cat >> %s" % out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == msg(3)  # only the new one
    server.put_many([msg(4)])
    r = imap("fetch")
    assert r.returncode == 0 and r.stdout.startswith(b"From MAILER-DAEMON ")
    assert r.stdout.endswith(msg(4).replace(b"\nFrom the", b"\n>From the").replace(b"\n>From q", b"\n>>From q") + b"\n")


def test_delete_with_uidplus_expunges(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(5)])
    uids_before = server.flags()
    box = tmp_path / "inbox"
    r = imap("-v", "fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0, r.stderr
    assert stored(box) == [msg(n) for n in range(5)]
    assert server.folder_messages() == {}
    uids = sorted(uids_before)
    assert "UID EXPUNGE %d:%d\n" % (uids[0], uids[-1]) in r.stderr
    assert "no UIDPLUS" not in r.stderr


def test_delete_without_uidplus_only_flags_and_says_so_once(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    box = tmp_path / "inbox"
    r = imap("-v", "fetch", "--mbox", str(box), "--delete", host=server.host6)
    assert r.returncode == 0, r.stderr
    assert stored(box) == [msg(n) for n in range(3)]
    sent = [line for line in r.stderr.splitlines() if line.startswith("C: ")]
    assert not [line for line in sent if "EXPUNGE" in line or "CLOSE" in line]  # no UID EXPUNGE, no plain one
    assert r.stderr.count("has no UIDPLUS") == 1
    assert "pypop: ::1 has no UIDPLUS: the messages of INBOX are flagged \\Deleted, not expunged" in r.stderr
    assert len(server.folder_messages()) == 3
    assert all("\\Deleted" in f for f in server.flags().values())


def sent(stderr, word):
    """The commands of a -v transcript that hold ``word``, without their tags."""
    return [line.split(" ", 2)[2] for line in stderr.splitlines() if line.startswith("C: ") and word in line]


def test_delete_without_uidplus_a_second_run_fetches_flags_and_warns_nothing_again(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    box = tmp_path / "inbox"
    r = imap("fetch", "--mbox", str(box), "--delete", host=server.host6)
    assert r.returncode == 0 and r.stderr.count("has no UIDPLUS") == 1, r.stderr
    r = imap("-v", "fetch", "--mbox", str(box), "--delete", host=server.host6)
    assert r.returncode == 0, r.stderr
    assert (sent(r.stderr, "FETCH"), sent(r.stderr, "STORE"), sent(r.stderr, "EXPUNGE")) == ([], [], [])
    assert "UIDPLUS" not in r.stderr.replace("S: * CAPABILITY", "").replace("S: * OK [CAPABILITY", "")
    assert r.stderr.endswith("pypop: 0 messages fetched\n")
    server.put_many([msg(3)])
    new = max(server.flags())
    r = imap("-v", "fetch", "--mbox", str(box), "--delete", host=server.host6)
    assert r.returncode == 0, r.stderr
    assert sent(r.stderr, "STORE") == ["UID STORE %d +FLAGS.SILENT (\\Deleted)" % new]  # the new one only
    assert r.stderr.count("has no UIDPLUS") == 1 and "pypop: 1 message fetched" in r.stderr
    r = imap("-v", "fetch", "--all", "--mbox", str(box), "--delete", host=server.host6)
    assert r.returncode == 0 and "pypop: 0 messages fetched" in r.stderr  # --all: flagged, stored: not again
    assert (sent(r.stderr, "STORE"), r.stderr.count("has no UIDPLUS")) == ([], 0)
    assert stored(box) == [msg(n) for n in range(4)]
    assert len(server.folder_messages()) == 4 and all("\\Deleted" in f for f in server.flags().values())


def test_move_to_without_move_a_second_run_copies_nothing_again(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    box = tmp_path / "inbox"
    for _ in range(2):
        r = imap("-v", "fetch", "--mbox", str(box), "--move-to", imapserver.FOLDER, host=server.host6)
        assert r.returncode == 0, r.stderr
    assert (sent(r.stderr, "COPY"), sent(r.stderr, "STORE")) == ([], [])
    assert sorted(server.folder_messages(folder=imapserver.FOLDER).values()) == [msg(0), msg(1)]  # once each
    assert stored(box) == [msg(0), msg(1)]


def test_delete_with_uidplus_expunges_what_an_earlier_run_stored_and_only_flagged(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    box = tmp_path / "inbox"
    assert imap("fetch", "--mbox", str(box)).returncode == 0
    b = sorted(server.flags())[1]
    # as if a run was killed between its flag and its UID EXPUNGE (b), or before its flag (the others)
    server.admin("flags", "add", "-u", server.user, "\\Deleted", "mailbox", "INBOX", "uid", str(b))
    r = imap("-v", "fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0, r.stderr
    assert sent(r.stderr, "FETCH") == [] and "pypop: 0 messages fetched" in r.stderr
    assert server.folder_messages() == {} and stored(box) == [msg(n) for n in range(3)]


def test_move_to_a_non_ascii_folder_and_fetch_from_it(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    box = tmp_path / "inbox"
    r = imap("fetch", "--mbox", str(box), "--move-to", imapserver.FOLDER)
    assert r.returncode == 0, r.stderr
    assert server.folder_messages() == {}
    assert sorted(server.folder_messages(folder=imapserver.FOLDER).values()) == [msg(n) for n in range(3)]
    # the moved messages fetched again from the folder (a folder has its own state), utf-7 on the wire
    other = tmp_path / "other"
    r = imap("-v", "fetch", "--mbox", str(other), "--folder", imapserver.FOLDER)
    assert r.returncode == 0, r.stderr
    assert 'EXAMINE "%s"' % imapserver.FOLDER_WIRE in r.stderr
    assert stored(other) == [msg(n) for n in range(3)]


def test_move_to_without_move_copies_and_flags(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    a, b = sorted(server.flags())
    r = imap("-v", "fetch", "--mbox", str(tmp_path / "inbox"), "--move-to", imapserver.FOLDER, host=server.host6)
    assert r.returncode == 0, r.stderr
    assert 'UID COPY %d:%d "%s"' % (a, b, imapserver.FOLDER_WIRE) in r.stderr and "UID MOVE" not in r.stderr
    assert sorted(server.folder_messages(folder=imapserver.FOLDER).values()) == [msg(n) for n in range(2)]
    assert all("\\Deleted" in f for f in server.flags().values())


def test_several_folders_into_one_sink_and_mark_seen(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    server.put_many([msg(n, b"E") for n in range(2)], folder=imapserver.FOLDER)
    box = tmp_path / "inbox"
    r = imap("fetch", "--mbox", str(box), "--folder", "INBOX", "--folder", imapserver.FOLDER, "--mark-seen")
    assert r.returncode == 0, r.stderr
    assert stored(box) == [msg(0), msg(1), msg(0, b"E"), msg(1, b"E")]
    assert all(f == {"\\Seen"} for f in server.flags().values())
    assert list(server.flags(folder=imapserver.FOLDER).values()) == [{"\\Seen"}] * 2  # doveadm: the UTF-8 name
    r = imap("fetch", "--mbox", str(box), "--folder", "INBOX", "--folder", imapserver.FOLDER)
    assert r.returncode == 0 and len(stored(box)) == 4


def test_uidvalidity_reset_stores_nothing_twice(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(5)])
    box = tmp_path / "inbox"
    assert imap("fetch", "--mbox", str(box)).returncode == 0
    server.set_uidvalidity(4242)
    server.put_many([msg(5)])
    r = imap("fetch", "--mbox", str(box))
    assert r.returncode == 0, r.stderr
    assert "folder INBOX has a new UIDVALIDITY (4242, was " in r.stderr
    assert "folder INBOX: 5 messages stored before the change not fetched again" in r.stderr
    assert stored(box) == [msg(n) for n in range(6)]  # the new one only, nothing twice
    r = imap("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "") and len(stored(box)) == 6


def nomid(n, extra=b""):
    """A message without a Message-ID (a cron mail, a scanner's): known after a UIDVALIDITY change by
    the SHA-256 of its header and its size."""
    return b"From: cron@example.org\nTo: pmtest@example.org\nSubject: cron %d\n%s\nbody %d\n" % (n, extra, n)


def test_uidvalidity_reset_without_message_id_stores_nothing_twice(imap, tmp_path):
    server = imap.server
    twin = nomid(9)  # stored twice before the change: recognised twice, not a third time
    odd = [b"From: a@example.org\nSubject: a header, no body\n", b"Message-ID: <c@d> (a relay's comment)\n\nx\n"]
    old = [msg(0), nomid(1), twin, nomid(2, b"X-Long: " + b"y" * 70000 + b"\n"), twin, *odd]
    server.put_many(old)
    box = tmp_path / "inbox"
    assert imap("fetch", "--mbox", str(box)).returncode == 0
    server.set_uidvalidity(4343)
    new = [nomid(3), twin, nomid(1, b"Received: again\n")]  # a third twin; same body, another header
    server.put_many(new)
    r = imap("-v", "fetch", "--mbox", str(box))
    assert r.returncode == 0, r.stderr
    assert "pypop: folder INBOX: 7 messages stored before the change not fetched again" in r.stderr
    assert stored(box) == old + new  # each old one once, the new ones stored
    uids = sorted(server.flags())
    fetched = [line for line in r.stderr.splitlines() if line.startswith("C: ") and "BODY.PEEK[]" in line]
    assert len(fetched) == 1
    assert fetched[0].endswith(" UID FETCH %d:%d (UID RFC822.SIZE BODY.PEEK[])" % (uids[7], uids[9]))
    assert "pypop: 3 messages fetched" in r.stderr
    r = imap("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "") and stored(box) == old + new


def test_stat_list_uidl_retr_dele_by_uid(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    uids = sorted(server.flags())
    size = len(msg(0).replace(b"\n", b"\r\n"))
    r = imap("stat")
    assert (r.returncode, r.stdout) == (0, b"3 messages, %d bytes\n" % (3 * size))
    assert imap("list").stdout == b"".join(b"%d %d\n" % (u, size) for u in uids)
    r = imap("retr", str(uids[1]))
    assert (r.returncode, r.stdout) == (0, msg(1))
    r = imap("retr", str(uids[-1] + 7))
    assert (r.returncode, r.stdout, r.stderr) == (69, b"", "pypop: no message with UID %d in INBOX\n" % (uids[-1] + 7))
    r = imap("retr", str(uids[0]), str(uids[2]))
    assert r.returncode == 0 and [b for _f, b in transport.read_mbox(_file(tmp_path, r.stdout))] == [msg(0), msg(2)]
    r = imap("dele", str(uids[0]), str(uids[-1] + 7))
    assert (r.returncode, r.stderr) == (69, "pypop: no message with UID %d in INBOX\n" % (uids[-1] + 7))
    assert len(server.folder_messages()) == 3  # none deleted
    r = imap("dele", str(uids[0]), str(uids[2]))
    assert r.returncode == 0, r.stderr
    assert sorted(server.folder_messages().values()) == [msg(1)]
    assert imap("list").stdout == b"%d %d\n" % (uids[1], size)
    r = imap("list", "--folder", imapserver.FOLDER)
    assert (r.returncode, r.stdout) == (0, b"")


def test_imap_only_options_are_refused_for_pop3_and_bad_combinations(imap, run, tmp_path):
    hint = " (see 'pypop --help')\n"
    r = imap("fetch", "--move-to", "Archive")
    assert (r.returncode, r.stderr) == (
        64,
        "pypop: --move-to to standard output is refused: a pipe cannot be flushed to disk" + hint,
    )
    r = imap("fetch", "--mbox", str(tmp_path / "x"), "--delete", "--move-to", "Archive")
    assert (r.returncode, r.stderr) == (64, "pypop: give one of --delete and --move-to" + hint)
    r = run("pypop", "--server", "smtp://h", "stat", env={"HOME": str(tmp_path)})
    assert (r.returncode, r.stderr) == (
        64,
        "pypop: unknown POP or IMAP URL 'smtp://h': use pop3://, pop3s://, imap:// or imaps://" + hint,
    )
    assert not (tmp_path / "x").exists()
    r = imap("fetch", "--idle", "--folder", "INBOX", "--folder", imapserver.FOLDER)
    assert (r.returncode, r.stderr) == (
        64,
        "pypop: --idle watches one folder: give one --folder (one pypop --idle per folder)" + hint,
    )
    r = run(
        "pypop", "--server", "pop3://127.0.0.1:9", "fetch", "--folder", "Archiv", env={"HOME": str(tmp_path)}
    )  # refused before connecting
    assert (r.returncode, r.stderr) == (
        64,
        "pypop: --folder, --move-to, --mark-seen and --idle are for IMAP servers (imap:// or imaps://)" + hint,
    )


def test_a_killed_runs_appended_batch_is_recorded_not_fetched_again(imap, tmp_path):
    from pipemail import imapfetch, imapstate, mailbox

    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    box = tmp_path / "box"
    assert imap("fetch", "--mbox", str(box)).returncode == 0  # the folder's state exists
    server.put_many([msg(2)])
    line = imap("uidl").stdout.split(b"\n")[2].split()
    uid, uidvalidity = int(line[0]), int(line[1].split(b".")[0])
    directory = imapstate.account_dir(
        server.user, server.host, server.ssl_port, env={"XDG_STATE_HOME": str(tmp_path / "state")}
    )
    size = len(msg(2).replace(b"\n", b"\r\n"))
    name = imapfetch.label(imapstate.folder_stem("INBOX"), uidvalidity, uid, size, "<m2-INBOX@pipemail.test>")
    data = mailbox.mbox_bytes([msg(2)], "MAILER-DAEMON")
    before = box.stat().st_size
    mailbox.Pending.plan(str(box), os.stat(box), before, [(name, data)]).save(os.path.join(directory, "mbox.pending"))
    with open(box, "ab") as f:
        f.write(data)  # the batch got there; the run died before recording it
    r = imap("-v", "fetch", "--mbox", str(box))
    assert r.returncode == 0, r.stderr
    assert stored(box) == [msg(0), msg(1), msg(2)]  # not twice
    assert "UID FETCH" not in r.stderr and "pypop: 0 messages fetched" in r.stderr
    assert not os.path.exists(os.path.join(directory, "mbox.pending"))
    assert not os.path.exists(imapfetch.recovery_path(directory))
    index = open(imapstate.FolderState(directory, "INBOX").index_path).read()
    assert "%d %d %d <m2-INBOX@pipemail.test>\n" % (uidvalidity, uid, size) in index


def test_sigkill_mid_fetch_loses_nothing_and_stores_nothing_twice(imap, tmp_path):
    import signal
    import subprocess
    import time

    from conftest import command_path

    server = imap.server
    server.put_many([msg(n) + b"z" * 5000 + b"\n" for n in range(1000)])
    box = tmp_path / "box"
    srv = "imaps://%s:%d" % (server.host, server.ssl_port)
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": server.password,
    }
    cmd = command_path("pypop") + ["--server", srv, "--user", server.user, "--tls-trust-file", server.ca_file]
    proc = subprocess.Popen(cmd + ["fetch", "--mbox", str(box), "--delete"], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline and (not box.exists() or box.stat().st_size < 1_000_000):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()  # killed mid-fetch, not finished
    assert box.stat().st_size < 1000 * 5000
    r = imap("fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0, r.stderr
    assert stored(box) == [msg(n) + b"z" * 5000 + b"\n" for n in range(1000)]  # all, in order, none twice
    assert server.folder_messages() == {}


def test_the_man_pages_imap_examples_work(imap, tmp_path):
    import shlex

    from conftest import ROOT

    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    server.put_many([msg(n, b"E") for n in range(2)], folder=imapserver.FOLDER)
    text = (ROOT / "man" / "man1" / "pypop.1").read_text()
    lines = [line.replace("\\-", "-").replace("\\(ti", "~") for line in text.splitlines()]
    examples = [line for line in lines if line.startswith("pypop --server imaps://imap.example.com --user me ")]
    assert len(examples) == 5
    (tmp_path / "mail").mkdir()
    outputs = []
    for line in examples:
        args, _, redirect = line.partition(" > ")
        args = shlex.split(args)[5:]  # after pypop --server URL --user me
        if "--idle" in args:  # runs until stopped: the --idle tests run it
            continue
        if "retr" in args:
            args[-1] = str(min(server.flags(folder=imapserver.FOLDER)))  # for UID 17: the folder's first
        args = [imapserver.FOLDER if a == "Archive" else a for a in args]
        r = imap(*args)
        assert (r.returncode, r.stderr) == (0, ""), (line, r.stderr)
        outputs.append(r.stdout)
    md = tmp_path / "Maildir" / "new"
    assert sorted(p.read_bytes() for p in md.iterdir()) == sorted([msg(0), msg(1), msg(0, b"E"), msg(1, b"E")])
    # nothing new for the mbox; the INBOX's two, stored by the first example, moved to the folder
    assert not (tmp_path / "mail" / "inbox").exists() and server.folder_messages() == {}
    assert outputs[2].count(b"\n") == 4 and outputs[3] == msg(0, b"E")  # list; retr > message.eml


def test_sigkill_mid_maildir_batch_delivers_nothing_twice(imap, tmp_path):
    import signal
    import subprocess
    import time

    from conftest import command_path

    server = imap.server
    body = [msg(n) + b"z" * 5000 + b"\n" for n in range(300)]
    server.put_many(body)
    top = tmp_path / "Maildir"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": server.password,
    }
    cmd = command_path("pypop") + ["--server", "imaps://%s:%d" % (server.host, server.ssl_port)]
    cmd += ["--user", server.user, "--tls-trust-file", server.ca_file, "fetch", "--maildir", str(top), "--delete"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline and (not (top / "new").exists() or len(os.listdir(top / "new")) < 20):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()  # killed mid-batch, not finished
    assert 20 <= len(os.listdir(top / "new")) < 300
    r = imap("fetch", "--maildir", str(top), "--delete")
    assert r.returncode == 0, r.stderr
    got = [p.read_bytes() for p in (top / "new").iterdir()]
    assert len(got) == 300 and sorted(got) == sorted(body)  # none twice, none lost
    assert server.folder_messages() == {}


class Idler:
    """``pypop -v fetch --idle ...`` running, its standard error read line by line in a thread."""

    def __init__(self, server, tmp_path, *args, host=None):
        import subprocess
        import threading

        from conftest import command_path

        env = {
            **os.environ,
            "HOME": str(tmp_path),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "PIPEMAIL_PASSWORD": server.password,
        }
        env.pop("PIPEMAIL_DEBUG", None)
        cmd = command_path("pypop") + [
            "-v",
            "--server",
            "imaps://%s:%d" % ("[%s]" % host if host else server.host, server.ssl_port),
            "--user",
            server.user,
            "--tls-trust-file",
            server.ca_file,
            "fetch",
            "--idle",
            *args,
        ]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        self.lines = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append(None)
            self.changed.notify_all()

    def count(self, text):
        match = text if callable(text) else (lambda line: text in line)
        return sum(1 for line in self.lines if line is not None and match(line))

    def wait_for(self, text, count=1, timeout=10):
        with self.changed:
            self.changed.wait_for(lambda: self.count(text) >= count or None in self.lines, timeout)
            assert self.count(text) >= count, "\n".join(line for line in self.lines if line is not None)

    def stop(self):
        import signal

        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        with self.changed:
            self.changed.wait_for(lambda: None in self.lines, 10)
        return code, [line for line in self.lines if line is not None]


def test_idle_fetches_mail_as_it_arrives_through_exists(imap, tmp_path):
    import time

    server = imap.server
    server.put_many([msg(0)])
    box = tmp_path / "box"
    idler = Idler(server, tmp_path, "--mbox", str(box))
    try:
        idler.wait_for("=== idling in INBOX")
        assert stored(box) == [msg(0)]
        start = time.monotonic()
        server.put_many([msg(1)])  # another client's delivery: Dovecot says EXISTS while we idle
        idler.wait_for("=== idling in INBOX", count=2)
        assert time.monotonic() - start < 10
        assert stored(box) == [msg(0), msg(1)]
    finally:
        code, lines = idler.stop()
    assert code == 0, lines
    i = lines.index("=== idling in INBOX")
    after = lines[i + 1 :]
    exists = [n for n, line in enumerate(after) if line.startswith("S: * ") and line.endswith(" EXISTS")]
    assert exists and after[exists[0] + 1].startswith("=== new mail: * ") and after[exists[0] + 1].endswith(" EXISTS")
    assert not [line for line in after[: exists[0]] if line.startswith("C: ") and "IDLE" not in line]  # no poll
    assert lines[-1] == "pypop: 2 messages fetched"
    assert "C: DONE" in lines and lines[-2] == "S: * BYE Logging out"


def test_idle_with_delete_without_uidplus_says_so_once_per_run(imap, tmp_path):
    server = imap.server
    server.put_many([msg(0)])
    box = tmp_path / "box"
    idler = Idler(server, tmp_path, "--mbox", str(box), "--delete", host=server.host6)
    try:
        idler.wait_for("=== idling in INBOX")
        server.put_many([msg(1)])
        idler.wait_for("=== idling in INBOX", count=2)
        assert stored(box) == [msg(0), msg(1)]
    finally:
        code, lines = idler.stop()
    assert code == 0, lines
    assert [line for line in lines if "UIDPLUS" in line and not line.startswith("S: ")] == [
        "pypop: ::1 has no UIDPLUS: the messages of INBOX are flagged \\Deleted, not expunged "
        "(pypop never sends a plain EXPUNGE, which would remove messages it did not store)"
    ]
    stores = [line.split(" ", 2)[2] for line in lines if line.startswith("C: ") and " UID STORE " in line]
    assert len(stores) == 2  # each message flagged once
    assert all("\\Deleted" in f for f in server.flags().values())


def test_idle_reconnects_after_a_drop(imap, tmp_path):
    import signal

    server = imap.server
    box = tmp_path / "box"
    idler = Idler(server, tmp_path, "--mbox", str(box))
    try:
        idler.wait_for("=== idling in INBOX")
        server.kill_sessions(signal.SIGKILL)
        idler.wait_for("pypop: 127.0.0.1 closed the connection during IDLE; connecting again in 1 s")
        idler.wait_for("=== idling in INBOX", count=2)
        server.put_many([msg(7)])
        idler.wait_for("=== idling in INBOX", count=3)
        assert stored(box) == [msg(7)]
    finally:
        code, lines = idler.stop()
    assert code == 0, lines
    assert lines[-1] == "pypop: 1 message fetched"


def test_idle_is_reissued_at_the_interval_given(imap, tmp_path):
    idler = Idler(imap.server, tmp_path, "--mbox", str(tmp_path / "box"), "--idle-reissue", "1")
    try:
        # DONE and IDLE again after a second, no mail needed
        idler.wait_for(lambda line: line.startswith("C: ") and line.endswith(" IDLE"), count=2, timeout=6)
    finally:
        code, lines = idler.stop()
    assert code == 0, lines
    sent = [line.split(" ", 2)[-1] for line in lines if line.startswith("C: ")]
    i = sent.index("IDLE")
    assert sent[i : i + 4] == ["IDLE", "DONE", "IDLE", "DONE"]  # the last DONE: SIGTERM's
    assert lines[-1] == "pypop: 0 messages fetched"


def test_fetch_80mb_into_an_mbox_in_bounded_memory(imap, tmp_path):
    from peak import BIG_MB, LIMIT_MB, peak
    from test_pypop_memory import make_message, read_mbox

    server = imap.server
    big = make_message(BIG_MB << 20, b"big")
    server.put_many([big])
    box = tmp_path / "inbox"
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": server.password,
        "TMPDIR": str(tmp_path),
    }
    srv = "imaps://%s:%d" % (server.host, server.ssl_port)
    args = ["--server", srv, "--user", server.user, "--tls-trust-file", server.ca_file, "fetch", "--mbox", box]
    p = peak("pypop", *args, env=env)
    assert (p.returncode, p.stderr) == (0, ""), p
    ((line, body),) = read_mbox(box)
    assert line.startswith(b"From backup@example.org ") and body == big
    del big, body
    assert p.mb < LIMIT_MB, p
