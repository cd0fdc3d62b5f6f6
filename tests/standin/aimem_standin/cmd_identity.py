"""``ai-memory identity [--key-dir D] <generate|import|list|export-pub>`` (facts §5.2).

* ``generate [--agent-id ID] [--force] [--no-overwrite]`` -- refuses an existing ``<id>.pub``
  unless ``--force`` (anyhow error, exit 1); ``--no-overwrite`` is the hidden no-op.  Without
  ``--agent-id`` the id is the global ``--agent-id``/``AI_MEMORY_AGENT_ID`` or the random NHI
  default ``host:<host>:pid-<pid>-<uuid8>``.
* ``import --agent-id ID --pub PATH [--priv PATH]`` -- 32-byte raw files; a ``--priv`` must match
  the ``--pub``.
* ``list`` -- every valid ``<id>.pub`` (sorted); private keys are never read.
* ``export-pub --agent-id ID`` -- loads the pair (so an insecure ``.priv`` mode is refused) and
  prints the URL-safe no-pad base64 only.
* global ``--json``: one compact line with alphabetical keys (serde_json BTreeMap).

Key files, modes, directory precedence and the stand-in crypto are in :mod:`aimem_standin.keys`.
"""
import json
import os

from aimem_standin import keys
from aimem_standin.common import AppError, ArgSpec, UsageError

OWN_JSON = False
# `generate/import/export-pub` define their own --agent-id; keep it in argv after `identity`
OWN_GLOBALS = {"--agent-id"}

HELP = """Per-agent Ed25519 keypair lifecycle.

Commands:
  generate    Generate a fresh keypair for --agent-id and persist it under the key directory
              (0600 .priv / 0644 .pub). Refuses an existing id unless --force.
  import      Import a keypair from raw 32-byte files (--pub required, --priv optional).
  list        List every keypair stored under the key directory.
  export-pub  Print the URL-safe no-padding base64 public key for --agent-id.

Options:
      --key-dir <PATH>  Override the key storage directory (default: AI_MEMORY_KEY_DIR, else
                        ~/.config/ai-memory/keys)."""

USAGE = "ai-memory identity [OPTIONS] <COMMAND>"
VERBS = ("generate", "import", "list", "export-pub")


def _compact_json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _fail(exc):
    return AppError(exc.render() if isinstance(exc, keys.KeystoreError) else str(exc))


def _split_key_dir(argv):
    """``--key-dir`` is ``global = true`` inside ``identity``: accepted before or after the verb."""
    key_dir = None
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        name, eq, val = a.partition("=")
        if name == "--key-dir":
            if not eq:
                if i >= len(argv):
                    raise UsageError("a value is required for '--key-dir <PATH>' but none was "
                                     "supplied", USAGE)
                val = argv[i]
                i += 1
            key_dir = val
            continue
        rest.append(a)
    return key_dir, rest


def generate(ctx, key_dir, agent_id, force):
    explicit = agent_id if agent_id else ctx.opts.agent_id
    if explicit:
        keys.validate_agent_id_shape(explicit)
        ident = explicit
    else:
        ident = keys.default_agent_id(ctx.env)
    pub = keys.pub_path(key_dir, ident)
    if not force and os.path.exists(pub):
        raise keys.KeystoreError(
            "keypair for %s already exists at %s (pass --force to rotate; refused by default "
            "to prevent accidental key overwrite)" % (ident, pub))
    public = keys.generate_and_save(key_dir, ident)
    b64 = keys.public_b64(public)
    if ctx.opts.json:
        ctx.out(_compact_json({"generated": True, "agent_id": ident, "key_dir": key_dir,
                               "public_key_b64": b64}))
    else:
        ctx.out("generated keypair for %s" % ident)
        ctx.out("  key_dir = %s" % key_dir)
        ctx.out("  pub_b64 = %s" % b64)
    return 0


def import_(ctx, key_dir, agent_id, pub_file, priv_file):
    keys.validate_agent_id_shape(agent_id)
    try:
        public = keys.read_raw_key_file(pub_file)
    except keys.KeystoreError as exc:
        raise keys.with_context("reading --pub %s" % pub_file, exc)
    private = None
    if priv_file is not None:
        try:
            private = keys.read_raw_key_file(priv_file)
        except keys.KeystoreError as exc:
            raise keys.with_context("reading --priv %s" % priv_file, exc)
        if keys.derive_public(private) != public:
            raise keys.KeystoreError("imported --priv %s does not match --pub %s"
                                     % (priv_file, pub_file))
    keys.save(key_dir, agent_id, public, private)
    b64 = keys.public_b64(public)
    if ctx.opts.json:
        ctx.out(_compact_json({"imported": True, "agent_id": agent_id, "key_dir": key_dir,
                               "private_imported": private is not None,
                               "public_key_b64": b64}))
    else:
        ctx.out("imported keypair for %s (private=%s)"
                % (agent_id, "yes" if private is not None else "no"))
        ctx.out("  key_dir = %s" % key_dir)
        ctx.out("  pub_b64 = %s" % b64)
    return 0


def list_(ctx, key_dir):
    entries = keys.list_keys(key_dir)
    if ctx.opts.json:
        ctx.out(_compact_json({
            "count": len(entries), "key_dir": key_dir,
            "keys": [{"agent_id": a, "public_key_b64": keys.public_b64(p)} for a, p in entries]}))
    elif not entries:
        ctx.out("no keypairs in %s" % key_dir)
    else:
        for agent_id, public in entries:
            ctx.out("%s  %s" % (agent_id, keys.public_b64(public)))
        ctx.out("%d keypair(s) in %s" % (len(entries), key_dir))
    return 0


def export_pub(ctx, key_dir, agent_id):
    public, _private = keys.load(agent_id, key_dir)
    b64 = keys.public_b64(public)
    if ctx.opts.json:
        ctx.out(_compact_json({"agent_id": agent_id, "public_key_b64": b64}))
    else:
        ctx.out(b64)
    return 0


def run(ctx, argv):
    key_dir_flag, rest = _split_key_dir(argv)
    if not rest:
        raise UsageError("'ai-memory identity' requires a subcommand but one was not provided",
                         USAGE)
    verb, rest = rest[0], rest[1:]
    if verb.startswith("-"):
        raise UsageError("unexpected argument '%s' found" % verb, USAGE)
    if verb not in VERBS:
        raise UsageError("unrecognized subcommand '%s'" % verb, USAGE)
    usage = "ai-memory identity %s [OPTIONS]" % verb
    if verb == "generate":
        spec = ArgSpec(usage, flags=("--force", "--no-overwrite"),
                       options={"--agent-id": "AGENT_ID"})
    elif verb == "import":
        spec = ArgSpec(usage, options={"--agent-id": "AGENT_ID", "--pub": "PATH",
                                       "--priv": "PATH"}, required=("--agent-id", "--pub"))
    elif verb == "export-pub":
        spec = ArgSpec(usage, options={"--agent-id": "AGENT_ID"}, required=("--agent-id",))
    else:
        spec = ArgSpec(usage)
    args = spec.parse(rest)
    try:
        key_dir = keys.resolve_key_dir(key_dir_flag, ctx.env)
        if verb == "generate":
            return generate(ctx, key_dir, args["--agent-id"], args["--force"])
        if verb == "import":
            return import_(ctx, key_dir, args["--agent-id"], args["--pub"], args["--priv"])
        if verb == "list":
            return list_(ctx, key_dir)
        return export_pub(ctx, key_dir, args["--agent-id"])
    except keys.KeystoreError as exc:
        raise _fail(exc)
