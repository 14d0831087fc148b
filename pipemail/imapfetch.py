"""pypop's fetch over IMAP: new mail of each folder by UIDVALIDITY and UID, into pop3's sinks.

Public API::

    fetch(client, sink, directory, folders, *, every=False, delete=False, move_to=None,
          mark_seen=False, limit=None, max_size=None, warn=None, log=None, progress=None,
          stop=None, keep_selected=False, told=None)
        -> (stored, skipped)
    recovery_path(directory) -> the file an MboxSink records a killed run's whole messages in
    label(stem, uidvalidity, uid, size, key) / parse_label(text)

``client`` is a logged-in :class:`pipemail.imap.Client`; ``sink`` one of
:mod:`pipemail.pop3`'s sinks (MboxSink, MaildirSink, MdaSink, StreamSink); ``directory``
the account's state directory (:func:`pipemail.imapstate.account_dir`); ``folders`` the
folder names as the user writes them (UTF-8; sent in modified UTF-7).

The order of a batch is the order of POP3's: the messages are stored (appended and
fsynced, delivered into a Maildir and its directory fsynced, or accepted by the MDA),
then recorded (:class:`pipemail.imapstate.FolderState`: index and state fsynced), and
only then flagged, moved or deleted.  What an earlier run stored and flagged \\Deleted (a
server without UIDPLUS keeps it until a mail client expunges the folder) is left alone: not
fetched (also by ``every``), flagged, copied or mentioned again.  An mbox append names each message of the batch
in its pending record by a label that holds the folder, UIDVALIDITY, UID, size and key,
so that a run killed after the append but before the record is settled by the next run
(:func:`apply_recovered`) and fetches nothing twice.
"""

import os

from pipemail.errors import IOFailure, PipemailError, describe_oserror, shown

FLAG_ONLY = (
    "%s has no UIDPLUS: the messages of %s are flagged \\Deleted, not expunged "
    "(pypop never sends a plain EXPUNGE, which would remove messages it did not store)"
)
HEAD_PEEK = 1 << 20  # bytes of a message read ahead to find the end of its header (its key)


def recovery_path(directory):
    return os.path.join(directory, "mbox.recovered")


def label(stem, uidvalidity, uid, size, key):
    """The name of a message in an mbox's pending record (no spaces: keys have none)."""
    return "imap/%s/%d/%d/%d/%s" % (stem, uidvalidity, uid, size, key.replace(" ", "_"))


def parse_label(text):
    """``(stem, uidvalidity, uid, size, key)`` of a :func:`label`, or None."""
    parts = text.split("/", 5)
    if len(parts) != 6 or parts[0] != "imap":
        return None
    try:
        return parts[1], int(parts[2]), int(parts[3]), int(parts[4]), parts[5]
    except ValueError:
        return None


def _recovered(directory):
    try:
        with open(recovery_path(directory), "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").split("\n")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise IOFailure("cannot read %s: %s" % (shown(recovery_path(directory)), describe_oserror(exc))) from None
    return [p for p in (parse_label(line.strip()) for line in lines if line.strip()) if p is not None]


def apply_recovered(st, entries):
    """Settle in ``st`` what a killed run appended whole to the mbox (same folder and UIDVALIDITY)."""
    from pipemail.imapstate import Stored, folder_stem

    stem = folder_stem(st.folder)
    todo = [
        Stored(uid, size, key)
        for s, v, uid, size, key in entries
        if s == stem and v == st.uidvalidity and uid > st.last and uid not in st.extra
    ]
    if todo:
        st.new([e.uid for e in todo])
        st.stored(todo)
    return len(todo)


def _peeked(chunks):
    """``(header bytes read ahead, the whole message's chunks)``."""
    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if b"\n\n" in head or len(head) >= HEAD_PEEK:
            break

    def whole():
        if head:
            yield head
        yield from chunks

    return head, whole()


def fetch(
    client,
    sink,
    directory,
    folders,
    *,
    every=False,
    delete=False,
    move_to=None,
    mark_seen=False,
    limit=None,
    max_size=None,
    warn=None,
    log=None,
    progress=None,
    stop=None,
    keep_selected=False,
    told=None,
):
    """Fetch each folder's new messages into ``sink``; (stored, skipped) over all folders.

    ``stop``, when given, is asked between batches (a SIGTERM seen): true ends the fetch there,
    what is stored recorded.  ``keep_selected`` leaves the last folder selected (for IDLE).
    ``told``: a set that the fetches of one run share (:func:`idle`'s), so that what is said once
    a run (the server has no UIDPLUS) is said once."""
    from pipemail import utf7
    from pipemail.imap import BATCH
    from pipemail.imapstate import FolderState, Stored, folder_stem, message_key

    recovered = _recovered(directory)
    stored = skipped = 0
    told = set() if told is None else told
    move_wire = utf7.encode(move_to) if move_to else None
    left = limit
    for folder in folders:
        if left is not None and left <= 0:
            break
        wire = utf7.encode(folder)
        st = FolderState(directory, folder)
        if log:
            log("=== state of %s: %s" % (folder, shown(st.state_path)))
        changes = delete or move_to or mark_seen
        f = client.select(wire, readonly=not changes)
        old = st.begin(f.uidvalidity)
        if old is not None and warn:
            warn(
                "folder %s has a new UIDVALIDITY (%d, was %d): its messages are matched by Message-ID (or "
                "header) and size against what was stored, and only the others are fetched"
                % (folder, f.uidvalidity, old)
            )
        apply_recovered(st, recovered)
        if delete or move_to:  # stored by an earlier run stopped before its delete or move
            # Not those that went only to standard output (volatile), and, unless UID EXPUNGE can
            # finish an earlier delete, not those flagged \Deleted already: without MOVE they
            # were copied already (a COPY again would be one more copy each run).
            again = delete and client.has("UIDPLUS")
            earlier = [
                u
                for u in client.new_uids(0, undeleted=not again)
                if (u <= st.last or u in st.extra) and u not in st.volatile
            ]
            if earlier and not every:
                _dispose(client, earlier, delete, move_wire, mark_seen, folder, warn, told)
        if every:
            todo = client.new_uids(0)
            stored_here = {u for u in todo if (u <= st.last or u in st.extra) and u not in st.volatile}
            if stored_here:
                # stored and flagged \Deleted (a --delete without UIDPLUS, or a mail client), waiting
                # for an expunge: not fetched again
                kept = set(client.new_uids(0, undeleted=True))
                todo = [u for u in todo if u in kept or u not in stored_here]
            st.new(todo)
        elif f.uidnext is not None and st.up_to_date(f.uidnext) and not st.recovering:
            todo = []
        else:
            todo = st.new(client.new_uids(st.last))
        if st.recovering and todo:
            known = _recognised(client, st.matcher(), todo)
            if known:
                st.stored(known)
                if warn:
                    warn(
                        "folder %s: %d message%s stored before the change not fetched again"
                        % (folder, len(known), "" if len(known) == 1 else "s")
                    )
                done = {k.uid for k in known}
                todo = [u for u in todo if u not in done]
        sizes = None
        if max_size is not None and todo:
            sizes = {u: size for u, size, _mid in client.index(todo)}
            big = [u for u in todo if sizes.get(u, 0) > max_size]
            for u in big:
                if warn:
                    warn(
                        "message UID %d of %s is %d bytes, over --max-size: left on the server" % (u, folder, sizes[u])
                    )
            skipped += len(big)
            todo = [u for u in todo if sizes.get(u, 0) <= max_size]
        cut = left is not None and len(todo) > left
        if cut:
            todo = todo[:left]
        advance = progress(len(todo), sum(sizes[u] for u in todo) if sizes else None) if progress and todo else None
        stem = folder_stem(folder)
        for start in range(0, len(todo), BATCH):
            if stop is not None and stop():
                cut = True
                break
            batch = todo[start : start + BATCH]
            entries = []
            delivered = []  # of entries: those the sink asked past (stored, with a sink that stores_each)

            def items(batch=batch, entries=entries, delivered=delivered, advance=advance, stem=stem, v=f.uidvalidity):
                for uid, size, chunks in client.fetch(batch):
                    head, whole = _peeked(chunks)
                    key = message_key(head)
                    entries.append(Stored(uid, size, key))
                    if advance is not None:
                        whole = _advancing(whole, advance)
                    yield label(stem, v, uid, size, key), whole
                    delivered.append(entries[-1])

            try:
                sink.store(items())  # stored and flushed to disk
            except BaseException:
                if sink.stores_each and delivered:  # those before the failure are stored: not again
                    try:
                        st.stored(delivered, durable=sink.durable)
                    except PipemailError:
                        pass  # the first error is the one to tell
                raise
            st.stored(entries, durable=sink.durable)  # then recorded
            sink.done()
            uids = [e.uid for e in entries]
            if uids:
                _dispose(client, uids, delete, move_wire, mark_seen, folder, warn, told, durable=sink.durable)
            stored += len(uids)
            if left is not None:
                left -= len(uids)
        if not cut:
            st.finish_recovery()  # every message was offered: what the former UIDVALIDITY named is settled
        if not keep_selected:
            client.unselect()
    if {folder_stem(x) for x in folders} >= {r[0] for r in recovered}:
        try:
            os.unlink(recovery_path(directory))
        except FileNotFoundError:
            pass
    return stored, skipped


def idle(
    connect,
    sink,
    directory,
    folder,
    *,
    stop,
    reissue=None,
    tick=1.0,
    warn=None,
    log=None,
    sleep=None,
    backoff_max=300,
    hold=None,
    **options,
):
    """Fetch ``folder``'s new mail, then wait for more with IMAP IDLE and fetch it as it comes.

    ``connect()`` gives a logged-in client; ``stop()`` is true once the caller was asked to end
    (SIGTERM): it is checked between batches and at every ``tick`` of quiet while idling.  An
    EXISTS seen while idling ends the IDLE (DONE) and the folder is fetched again.  A dropped
    connection, a BYE or a timeout (TempFailError) is said and the session made again after 1,
    2, 4... seconds (at most ``backoff_max``); any other error ends the loop.  ``options`` are
    :func:`fetch`'s (delete, move_to, mark_seen, max_size).  ``hold()``, when given, is a context
    manager held around each fetch (the account's lock: let go of while idling, so that a cron
    fetch or a --idle on another folder of the account can run).  Returns the messages stored."""
    import contextlib
    import time

    from pipemail.errors import TempFailError
    from pipemail.imap import IDLE_REISSUE

    sleep = sleep or time.sleep
    hold = hold or contextlib.nullcontext
    reissue = IDLE_REISSUE if reissue is None else reissue
    stored = 0
    backoff = 1
    told = set()  # said once a run, not once a fetch
    while not stop():
        try:
            with connect() as client:
                if not client.has("IDLE"):
                    from pipemail.errors import UnavailableError

                    raise UnavailableError("%s does not offer IDLE; run pypop fetch from cron instead" % client.where)
                backoff = 1
                while not stop():
                    with hold():
                        if stop():
                            break
                        n, _skipped = fetch(
                            client,
                            sink,
                            directory,
                            [folder],
                            warn=warn,
                            log=log,
                            stop=stop,
                            keep_selected=True,
                            told=told,
                            **options,
                        )
                    stored += n
                    if stop():
                        break
                    if log:
                        log("=== idling in %s" % folder)
                    with client.idle(reissue=reissue, tick=tick) as events:
                        for event in events:
                            if stop():
                                break
                            if event is not None and event.kind == "EXISTS":
                                if log:
                                    log("=== new mail: %s" % event.line)
                                break
                client.logout()
        except TempFailError as exc:
            if stop():
                break
            if warn:
                warn("%s; connecting again in %d s" % (exc, backoff))
            end = time.monotonic() + backoff
            while not stop() and time.monotonic() < end:
                sleep(min(tick, max(0.0, end - time.monotonic())))
            backoff = min(backoff * 2, backoff_max)
    return stored


def _recognised(client, match, todo):
    """The messages of ``todo`` (UIDs of a renumbered folder) that ``match`` (a
    :class:`pipemail.imapstate.Matcher`) knows were stored: by Message-ID and size, and those
    without a Message-ID by the hash of their header and size (their header read only when a
    message of that size without one was stored)."""
    from pipemail.imapstate import Stored, message_key

    if not len(match):
        return []
    known, bare = [], []
    sizes = match.hashed_sizes()
    for uid, size, mid in client.index(todo):
        if mid is not None:
            if match.take(mid, size):
                known.append(Stored(uid, size, mid))
        elif size in sizes:
            bare.append(uid)  # its key is the hash of its header: that header is needed
    for uid, size, header in client.headers(bare):
        key = message_key(header)
        if match.take(key, size):
            known.append(Stored(uid, size, key))
    return sorted(known)


def _dispose(client, uids, delete, move_wire, mark_seen, folder, warn, told, durable=True):
    """Flag, move or delete ``uids`` once stored.  That the server has no UIDPLUS is said once a
    run (``told``, a set the run's fetches share, remembers it)."""
    if mark_seen:
        client.add_flags(uids, ["\\Seen"])
    if not durable:
        return
    if move_wire:
        from pipemail import utf7
        from pipemail.errors import UnavailableError

        try:
            expunged = client.move(uids, move_wire)
        except UnavailableError as exc:  # e.g. [TRYCREATE]: say what becomes of the stored messages
            raise UnavailableError(
                "%s; the stored messages stay in %s, not fetched again: the next fetch --move-to moves them "
                "(create %s first, or name another folder)" % (str(exc).rstrip("."), folder, utf7.decode(move_wire))
            ) from None
    elif delete:
        expunged = client.delete(uids)
    else:
        return
    if not expunged and FLAG_ONLY not in told:
        told.add(FLAG_ONLY)
        if warn:
            warn(FLAG_ONLY % (client.where, folder))


def _advancing(chunks, advance):
    for chunk in chunks:
        advance(len(chunk))
        yield chunk


__all__ = ["FLAG_ONLY", "fetch", "idle", "recovery_path", "label", "parse_label", "apply_recovered"]
