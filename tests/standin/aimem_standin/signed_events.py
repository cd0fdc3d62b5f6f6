"""The v0.7 ``signed_events`` append-only hash chain (facts §2.6, §4) -- stand-in definition.

Columns (``migrations/sqlite/0020_v07_signed_events.sql`` + ``0028_v07_signed_events_chain.sql``):
``id, agent_id, event_type, payload_hash BLOB, signature, attest_level DEFAULT 'unsigned',
timestamp, prev_hash BLOB, sequence`` with a UNIQUE index on ``sequence``.  The core's ``db.py``
creates the table when it migrates to >= 42; :data:`SIGNED_EVENTS_DDL` is the same DDL for
callers that work on a bare connection (unit tests).

Stand-in chain definition (upstream's exact hash input is not needed by the collection; this one
has the same failure modes):

* ``payload_hash = sha256(payload_bytes)`` (32 bytes);
* ``row_hash(row) = sha256(prev_hash || payload_hash || sequence as 8-byte big-endian)``;
* the first row (``sequence = 1``) has ``prev_hash = GENESIS`` (32 zero bytes); every later row has
  ``prev_hash = row_hash(previous row)``; sequences are contiguous from 1.
* ``signature`` is NULL for ``attest_level = 'unsigned'`` rows.  A signed row carries
  ``sha256(public_key || payload_hash)`` -- a stand-in for Ed25519 (see :mod:`aimem_standin.keys`,
  where the public key is ``sha256(private_key)``).

:func:`verify` walks rows with ``sequence > since`` in order.  The first walked row must have
sequence ``since + 1`` and (when ``since > 0`` and that row exists) a ``prev_hash`` equal to the
hash of row ``since``; rows at or below ``since`` are trusted, as upstream does.  The walk stops at
the first break (sequence gap/duplicate or ``prev_hash`` mismatch): ``chain_break`` is that row's
sequence and ``rows_checked`` counts the rows walked including it.  Signature failures are
collected separately and never affect ``chain_holds``.  Tampering with the *last* row is not
detectable by a bare hash chain (no anchored head) -- true upstream as well.
"""
import datetime
import hashlib
import struct
import uuid

GENESIS = b"\x00" * 32

SIGNED_EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS signed_events (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload_hash BLOB NOT NULL,
    signature    BLOB,
    attest_level TEXT NOT NULL DEFAULT 'unsigned',
    timestamp    TEXT NOT NULL,
    prev_hash    BLOB,
    sequence     INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_signed_events_sequence ON signed_events(sequence);
"""


def ensure_table(conn):
    """Create ``signed_events`` on a bare connection (the real ladder lives in ``db.py``)."""
    conn.executescript(SIGNED_EVENTS_DDL)


def payload_hash(payload_bytes):
    return hashlib.sha256(bytes(payload_bytes)).digest()


def row_hash(prev_hash, payload_hash_bytes, sequence):
    return hashlib.sha256(bytes(prev_hash or b"") + bytes(payload_hash_bytes)
                          + struct.pack(">q", int(sequence))).digest()


def sign(public_key, payload_hash_bytes):
    """Stand-in signature over a payload hash (see module docstring)."""
    return hashlib.sha256(bytes(public_key) + bytes(payload_hash_bytes)).digest()


def _now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def append_event(conn, agent_id, event_type, payload_bytes, public_key=None):
    """Append one row at the chain head and return its ``sequence``.

    ``public_key`` (32 bytes), when given, makes the row ``attest_level = 'signed'`` with a
    stand-in signature; otherwise the row is ``'unsigned'`` with a NULL signature.  Runs in its
    own ``BEGIN IMMEDIATE`` transaction unless the caller already opened one.
    """
    own_tx = not conn.in_transaction
    if own_tx:
        conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT sequence, prev_hash, payload_hash FROM signed_events "
            "ORDER BY sequence DESC LIMIT 1").fetchone()
        if row is None:
            sequence, prev = 1, GENESIS
        else:
            sequence = int(row[0]) + 1
            prev = row_hash(row[1], row[2], row[0])
        ph = payload_hash(payload_bytes)
        if public_key is not None:
            signature, attest = sign(public_key, ph), "signed"
        else:
            signature, attest = None, "unsigned"
        conn.execute(
            "INSERT INTO signed_events (id, agent_id, event_type, payload_hash, signature, "
            "attest_level, timestamp, prev_hash, sequence) VALUES (?,?,?,?,?,?,?,?,?)",
            (str(uuid.uuid4()), agent_id, event_type, ph, signature, attest, _now_rfc3339(),
             prev, sequence))
        if own_tx:
            conn.execute("COMMIT")
    except BaseException:
        if own_tx and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return sequence


def verify(conn, since=0, public_key=None):
    """Walk the chain; return ``{rows_checked, chain_break, signature_failures, chain_holds}``.

    ``since`` <= 0 walks everything.  ``public_key``: when given, every row that carries a
    signature is checked against it and failing sequences are listed in ``signature_failures``;
    without a key signatures are not checked.
    """
    since = int(since or 0)
    if since < 0:
        since = 0
    expected_prev = None
    expected_seq = since + 1
    if since > 0:
        anchor = conn.execute(
            "SELECT prev_hash, payload_hash, sequence FROM signed_events WHERE sequence = ?",
            (since,)).fetchone()
        if anchor is not None:
            expected_prev = row_hash(anchor[0], anchor[1], anchor[2])
    else:
        expected_prev = GENESIS
    rows_checked = 0
    chain_break = None
    failures = []
    cursor = conn.execute(
        "SELECT sequence, prev_hash, payload_hash, signature FROM signed_events "
        "WHERE sequence > ? ORDER BY sequence ASC", (since,))
    for sequence, prev, ph, signature in cursor:
        rows_checked += 1
        if public_key is not None and signature is not None:
            if bytes(signature) != sign(public_key, bytes(ph)):
                failures.append(int(sequence))
        if int(sequence) != expected_seq or (
                expected_prev is not None and bytes(prev or b"") != expected_prev):
            chain_break = int(sequence)
            break
        expected_prev = row_hash(prev, ph, sequence)
        expected_seq = int(sequence) + 1
    return {
        "rows_checked": rows_checked,
        "chain_break": chain_break,
        "signature_failures": failures,
        "chain_holds": chain_break is None,
    }


def tamper(conn, sequence, new_payload=b"tampered"):
    """Test helper: rewrite the payload hash of row ``sequence`` (breaks the link to row+1)."""
    cur = conn.execute("UPDATE signed_events SET payload_hash = ? WHERE sequence = ?",
                       (payload_hash(new_payload), int(sequence)))
    if cur.rowcount != 1:
        raise LookupError("no signed_events row with sequence=%s" % sequence)
    conn.commit()
