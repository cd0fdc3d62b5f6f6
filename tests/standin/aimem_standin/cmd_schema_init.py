"""``ai-memory schema-init --store-url URL [--json] [--embedding-dim N]`` (facts §5.3).

Only compiled into ``--features sal`` builds: the stand-in build ``0.7.0-sal`` lists it in its
subcommand set; every other build reports ``unrecognized subcommand`` (exit 2) before this module
is imported.  There is no ``--upgrade`` and no ``--skip-age`` (clap exit 2).

* ``sqlite:///abs/path`` or ``sqlite://./rel`` (anything after ``sqlite://``): opening the store
  runs the migrations (``db.open_db`` -> the build's schema target), then the catalog is listed;
* ``postgres://`` / ``postgresql://``: ``Error: postgres support not compiled in (build with
  --features sal-postgres)``, exit 1 (the stand-in mirrors a ``sal`` build without
  ``sal-postgres``);
* anything else: ``Error: unrecognised store URL ...``, exit 1.

``--json`` belongs to this subcommand (``OWN_JSON``), like doctor's.
"""
import json
import sqlite3

from aimem_standin import db
from aimem_standin.common import AppError, ArgSpec, UsageError

OWN_JSON = True

HELP = """Bootstrap the storage schema for a SAL backend by URL.

Options:
      --store-url <URL>      Target store URL (sqlite:///path/to/file.db or postgres://...)
      --json                 Emit the summary as JSON
      --embedding-dim <DIM>  Embedding column dimension [default: 384]"""

USAGE = "ai-memory schema-init [OPTIONS] --store-url <URL>"
DEFAULT_EMBEDDING_DIM = 384
POSTGRES_NOT_COMPILED = "postgres support not compiled in (build with --features sal-postgres)"


def is_sqlite_url(url):
    return url.startswith("sqlite://")


def is_postgres_url(url):
    return url.startswith("postgres://") or url.startswith("postgresql://")


def sqlite_path_from_url(url):
    """``sqlite:///foo`` -> ``/foo``; ``sqlite://./foo`` -> ``./foo``."""
    path = url[len("sqlite://"):] if url.startswith("sqlite://") else url
    if path.startswith("/"):
        rest = path[1:]
        return rest if rest.startswith("/") else path
    return path


def _names(conn, kind):
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name", (kind,))]


def enumerate_sqlite(conn, url, embedding_dim):
    try:
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
    except sqlite3.Error:
        version = 0
    return {
        "url": url,
        "kind": "sqlite",
        "tables": _names(conn, "table"),
        "views": _names(conn, "view"),
        "functions": [],
        "indices": _names(conn, "index"),
        "extensions": [],
        "schema_version": int(version),
        "age_projection_created": False,
        "embedding_dim": embedding_dim,
        "embedding_dim_migrated": False,
    }


def run(ctx, argv):
    args = ArgSpec(USAGE, flags=("--json",),
                   options={"--store-url": "URL", "--embedding-dim": "DIM"},
                   required=("--store-url",)).parse(argv)
    dim = DEFAULT_EMBEDDING_DIM
    if args["--embedding-dim"] is not None:
        try:
            dim = int(args["--embedding-dim"])
            if not 0 <= dim <= 0xFFFFFFFF:
                raise ValueError
        except ValueError:
            raise UsageError("invalid value '%s' for '--embedding-dim <DIM>': invalid digit "
                             "found in string" % args["--embedding-dim"], USAGE)
    url = args["--store-url"]
    if is_sqlite_url(url):
        path = sqlite_path_from_url(url)
        try:
            conn = db.open_db(path, ctx.build)
        except db.DbError as exc:
            raise AppError("open store at %s\n\nCaused by:\n    %s" % (url, exc))
        try:
            report = enumerate_sqlite(conn, url, dim)
        finally:
            conn.close()
    elif is_postgres_url(url):
        raise AppError(POSTGRES_NOT_COMPILED)
    else:
        raise AppError("unrecognised store URL `%s` (expected sqlite:// or postgres://)" % url)

    if args["--json"]:
        ctx.out(json.dumps(report, indent=2))
    else:
        ctx.out("schema initialized at %s" % report["url"])
        ctx.out("  tables:         %d" % len(report["tables"]))
        ctx.out("  indices:        %d" % len(report["indices"]))
        ctx.out("  views:          %d" % len(report["views"]))
        ctx.out("  functions:      %d" % len(report["functions"]))
        ctx.out("  extensions:     [%s]" % ", ".join(report["extensions"]))
        ctx.out("  schema_version: %d" % report["schema_version"])
        ctx.out("  embedding_dim:  %d" % report["embedding_dim"])
    return 0
