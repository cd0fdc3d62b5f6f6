"""Per-agent keypair storage of v0.7.0 (facts §5.2; ``src/identity/keypair.rs``) -- stand-in.

Storage layout and behaviour follow release/v0.7.0:

* key directory: ``--key-dir`` > ``AI_MEMORY_KEY_DIR`` (when non-empty) >
  ``dirs::config_dir()/ai-memory/keys`` = ``$XDG_CONFIG_HOME`` (when absolute) or ``~/.config``
  on Linux (:func:`default_key_dir`);
* ``<dir>/<agent_id>.pub``: 32 raw bytes, mode 0644; ``<dir>/<agent_id>.priv``: 32 raw bytes,
  mode 0600.  An existing file is removed first, the new one is created with
  ``O_CREAT|O_EXCL`` and the mode (so still subject to umask) and fsynced;
* only the key directory itself is created (``create_dir_all``); an id containing ``/`` therefore
  fails to write (derived upstream behaviour);
* loading a ``.priv`` with any group/other bit refuses with the upstream message.

**Stand-in crypto:** real Ed25519 is not in the Python stdlib.  The private key is 32 random bytes
and the public key is ``sha256(private_key)``; the "signature" in
:mod:`aimem_standin.signed_events` is ``sha256(public_key || message_hash)``.  File sizes, modes,
base64 shapes and all error paths are faithful; the bytes are not real Ed25519 keys.
"""
import base64
import hashlib
import os
import pwd
import socket
import uuid

KEY_DIR_ENV = "AI_MEMORY_KEY_DIR"
DAEMON_KEYPAIR_LABEL = "daemon"
KEY_LEN = 32
MAX_AGENT_ID_LEN = 128
_ALLOWED_EXTRA = frozenset("_-:@./")


class KeystoreError(Exception):
    """A keystore failure carrying an anyhow-style context chain (outermost first)."""

    def __init__(self, *chain):
        Exception.__init__(self, chain[0])
        self.chain = list(chain)

    def render(self):
        """anyhow's ``{:?}``: ``msg`` + ``Caused by:`` (numbered when more than one cause)."""
        head, causes = self.chain[0], self.chain[1:]
        if not causes:
            return head
        if len(causes) == 1:
            return "%s\n\nCaused by:\n    %s" % (head, causes[0])
        return "%s\n\nCaused by:\n%s" % (head, "\n".join(
            "    %d: %s" % (i, c) for i, c in enumerate(causes)))

    def __str__(self):
        return self.render()


def io_error_text(exc):
    """Render an OSError the way Rust's ``io::Error`` Display does."""
    if isinstance(exc, OSError) and exc.errno:
        return "%s (os error %d)" % (os.strerror(exc.errno), exc.errno)
    return str(exc)


def with_context(context, exc):
    if isinstance(exc, KeystoreError):
        return KeystoreError(context, *exc.chain)
    return KeystoreError(context, io_error_text(exc))


def _home_dir(env):
    home = env.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir or None
    except KeyError:
        return None


def config_dir(env):
    """``dirs::config_dir()`` on Linux."""
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return xdg
    home = _home_dir(env)
    if home is None:
        return None
    return os.path.join(home, ".config")


def default_key_dir(env):
    """``AI_MEMORY_KEY_DIR`` (non-empty) > ``<config_dir>/ai-memory/keys``."""
    override = env.get(KEY_DIR_ENV)
    if override:
        return override
    base = config_dir(env)
    if base is None:
        raise KeystoreError("OS did not advertise a config directory for key storage")
    return os.path.join(base, "ai-memory", "keys")


def resolve_key_dir(key_dir_flag, env):
    if key_dir_flag is not None:
        return key_dir_flag
    return default_key_dir(env)


def validate_agent_id_shape(agent_id):
    """``validate::validate_agent_id_shape``; raises :class:`KeystoreError` with upstream's text."""
    if not agent_id:
        raise KeystoreError("agent_id cannot be empty")
    if len(agent_id.encode("utf-8")) > MAX_AGENT_ID_LEN:
        raise KeystoreError("agent_id exceeds max length of %d bytes" % MAX_AGENT_ID_LEN)
    for c in agent_id:
        if not ((c.isascii() and c.isalnum()) or c in _ALLOWED_EXTRA):
            raise KeystoreError("agent_id contains invalid character '%s' "
                            "(allowed: alphanumeric, _-:@./)" % c)
    if ".." in agent_id:
        raise KeystoreError("agent_id may not contain '..' (path-traversal guard)")
    if agent_id.startswith("/"):
        raise KeystoreError("agent_id may not start with '/' (path-traversal guard)")


def default_agent_id(env):
    """NHI default used when no id is given: ``AI_MEMORY_AGENT_ID`` or ``host:<h>:pid-<p>-<u8>``."""
    explicit = env.get("AI_MEMORY_AGENT_ID")
    if explicit:
        return explicit
    return "host:%s:pid-%d-%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def pub_path(key_dir, agent_id):
    return os.path.join(key_dir, agent_id + ".pub")


def priv_path(key_dir, agent_id):
    return os.path.join(key_dir, agent_id + ".priv")


def derive_public(private_key):
    """Stand-in for Ed25519 ``SigningKey::verifying_key`` (see module docstring)."""
    return hashlib.sha256(bytes(private_key)).digest()


def public_b64(public_key):
    """URL-safe base64 without padding (43 characters for 32 bytes)."""
    return base64.urlsafe_b64encode(bytes(public_key)).rstrip(b"=").decode("ascii")


def generate_private():
    return os.urandom(KEY_LEN)


def _write_with_mode(path, data, mode, what):
    """Remove, then create with O_CREAT|O_EXCL and ``mode`` (umask applies), write, fsync."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise with_context("removing existing %s %s" % (what, path), exc)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     mode)
    except OSError as exc:
        raise with_context("writing %s %s" % (what, path), exc)
    try:
        view = memoryview(bytes(data))
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        raise with_context("writing %s %s" % (what, path), exc)
    finally:
        os.close(fd)


def ensure_dir(key_dir):
    try:
        os.makedirs(key_dir, exist_ok=True)
    except OSError as exc:
        raise with_context("creating key directory %s" % key_dir, exc)


def save(key_dir, agent_id, public_key, private_key=None):
    """Persist a keypair (``private_key=None``: public only, as ``identity import`` w/o --priv)."""
    validate_agent_id_shape(agent_id)
    ensure_dir(key_dir)
    _write_with_mode(pub_path(key_dir, agent_id), public_key, 0o644, "public key")
    if private_key is not None:
        _write_with_mode(priv_path(key_dir, agent_id), private_key, 0o600, "private key")
    return pub_path(key_dir, agent_id), priv_path(key_dir, agent_id)


def generate_and_save(key_dir, agent_id):
    private = generate_private()
    public = derive_public(private)
    save(key_dir, agent_id, public, private)
    return public


def read_raw_key_file(path):
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise with_context("reading key file %s" % path, exc)
    if len(data) != KEY_LEN:
        raise KeystoreError("key file %s has %d bytes, expected %d" % (path, len(data), KEY_LEN))
    return data


def load_public(agent_id, key_dir):
    path = pub_path(key_dir, agent_id)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise with_context("reading public key %s" % path, exc)
    if len(data) != KEY_LEN:
        raise KeystoreError("public key %s has %d bytes, expected %d" % (path, len(data), KEY_LEN))
    return data


def read_private(path):
    """``None`` when absent; refuses insecure modes with upstream's message."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise with_context("reading private key %s" % path, exc)
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o077:
            raise KeystoreError("private key %s has insecure mode %o; refusing to load. "
                            "Restore with: chmod 0600 %s" % (path, mode, path))
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise with_context("reading private key %s" % path, exc)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != KEY_LEN:
        raise KeystoreError("private key %s has %d bytes, expected %d" % (path, len(data), KEY_LEN))
    return data


def load(agent_id, key_dir):
    """Return ``(public, private_or_None)``; cross-checks the pair."""
    validate_agent_id_shape(agent_id)
    public = load_public(agent_id, key_dir)
    private = read_private(priv_path(key_dir, agent_id))
    if private is not None and derive_public(private) != public:
        raise KeystoreError("private key %s does not match public key %s"
                        % (priv_path(key_dir, agent_id), pub_path(key_dir, agent_id)))
    return public, private


def list_keys(key_dir):
    """Sorted ``[(agent_id, public)]`` of every valid ``<id>.pub``; ``[]`` if the dir is missing."""
    if not os.path.exists(key_dir):
        return []
    try:
        names = os.listdir(key_dir)
    except OSError as exc:
        raise with_context("reading key directory %s" % key_dir, exc)
    out = []
    for name in names:
        if not name.endswith(".pub"):
            continue
        stem = name[:-len(".pub")]
        try:
            validate_agent_id_shape(stem)
        except KeystoreError:
            continue
        try:
            with open(os.path.join(key_dir, name), "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if len(data) != KEY_LEN:
            continue
        out.append((stem, data))
    out.sort(key=lambda kv: kv[0].encode("utf-8"))
    return out


def ensure_keypair(key_dir, agent_id):
    """``keypair::ensure_keypair``: generate ``<id>.pub``/``.priv`` unless the pub exists.

    Returns ``(pub_path, priv_path, created)``.  ``serve`` on 0.7.0 builds calls it with
    ``(default_key_dir(env), "daemon")`` and logs the auto-generated WARN when ``created``.
    """
    p_pub, p_priv = pub_path(key_dir, agent_id), priv_path(key_dir, agent_id)
    if os.path.exists(p_pub):
        return p_pub, p_priv, False
    generate_and_save(key_dir, agent_id)
    return p_pub, p_priv, True

