"""``ai-memory verify-signed-events-chain [--since N] [--format text|json]`` (facts §4).

Opens the DB through ``ctx.open_db()`` (so a v20 DB is migrated first), walks ``signed_events``
with :func:`aimem_standin.signed_events.verify` and prints:

* ``--format json``: pretty JSON with keys ``rows_checked, chain_break, signature_failures,
  chain_holds`` (in that order);
* anything else (default ``text``): ``verify-signed-events-chain OK: <n> row(s) walked, chain
  holds`` or ``verify-signed-events-chain FAIL: chain break at sequence=<s> (<n> row(s) walked)``.

Exit 0 when the chain holds, 1 on a break; an open error is ``Error: open db at <p>: ...`` (1).
Signature failures never change ``chain_holds`` or the exit code.  Signatures are checked against
the daemon key ``<default key dir>/daemon.pub`` when it exists (stand-in signatures, see
:mod:`aimem_standin.signed_events`); without that key they are not checked.
"""
import json
import sqlite3

from aimem_standin import keys, signed_events
from aimem_standin.common import AppError, ArgSpec, UsageError

OWN_JSON = False

HELP = """Walk the signed_events cross-row hash chain and report its integrity.

Options:
      --since <SEQUENCE>  Lower-bound sequence (exclusive); rows at or below are trusted
                          [default: 0]
      --format <FORMAT>   Output format: text or json [default: text]"""

USAGE = "ai-memory verify-signed-events-chain [OPTIONS]"


def _daemon_public_key(ctx):
    try:
        key_dir = keys.default_key_dir(ctx.env)
        public = keys.load_public(keys.DAEMON_KEYPAIR_LABEL, key_dir)
    except keys.KeystoreError:
        return None
    return public


def run(ctx, argv):
    args = ArgSpec(USAGE, options={"--since": "SEQUENCE", "--format": "FORMAT"}).parse(argv)
    since = 0
    if args["--since"] is not None:
        try:
            since = int(args["--since"])
        except ValueError:
            raise UsageError("invalid value '%s' for '--since <SEQUENCE>': invalid digit found "
                             "in string" % args["--since"], USAGE)
    fmt = args["--format"] if args["--format"] is not None else "text"

    conn = ctx.open_db()  # AppError("open db at <p>: ...") on failure
    try:
        report = signed_events.verify(conn, since if since > 0 else 0,
                                      public_key=_daemon_public_key(ctx))
    except sqlite3.Error as exc:
        raise AppError("verify_chain over signed_events\n\nCaused by:\n    %s" % exc)
    finally:
        conn.close()

    if fmt == "json":
        ctx.out(json.dumps(report, indent=2))
    elif report["chain_holds"]:
        ctx.out("verify-signed-events-chain OK: %d row(s) walked, chain holds"
                % report["rows_checked"])
    else:
        ctx.out("verify-signed-events-chain FAIL: chain break at sequence=%s (%d row(s) walked)"
                % (report["chain_break"], report["rows_checked"]))
    return 0 if report["chain_holds"] else 1
