"""Environment-variable parsers of release/v0.7.0 (facts §6), as pure functions.

Every function takes the environment as a mapping (``ctx.env`` or ``os.environ``) so tests can
feed edge cases directly.  The parsing rules are deliberately *not* uniform -- that is the point:

* ``AI_MEMORY_FED_REQUIRE_SIG`` / ``AI_MEMORY_FED_REQUIRE_NONCE``: ON unless the value is exactly
  ``"0"``.  ``false``/``no``/``off``/`` 0`` all keep it ON.
* ``AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL`` / ``AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR``: open only
  for ``"1"`` or case-insensitive ``"true"`` (no trimming); ``yes``/``on`` stay closed.
* ``AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS`` has two parsers: the ``--db-passphrase-file`` one
  (``1`` / case-insensitive ``true``) and the ``[llm].api_key_file`` one (trimmed, lowercased,
  one of ``1 true yes on``).
* ``AI_MEMORY_PERMISSIONS_MODE``: lowercased but **not** trimmed; ``enforce|advisory|off``;
  anything else prints a message to stderr and falls back to config.toml, then ``enforce``.

All v0.7 security variables are ignored by the 0.6.4 and 0.7.0-tag builds (``build.has_v07_env``
false); callers check that flag (see :func:`security_env`).
"""

FED_REQUIRE_SIG = "AI_MEMORY_FED_REQUIRE_SIG"
FED_REQUIRE_NONCE = "AI_MEMORY_FED_REQUIRE_NONCE"
SSRF_ALLOW_DNS_FAIL = "AI_MEMORY_SSRF_GUARD_ALLOW_DNS_FAIL"
GOV_FAIL_OPEN = "AI_MEMORY_GOVERNANCE_FAIL_OPEN_ON_ERROR"
LAX_PERMS = "AI_MEMORY_PASSPHRASE_FILE_ALLOW_LAX_PERMS"
PERMISSIONS_MODE = "AI_MEMORY_PERMISSIONS_MODE"

VALID_PERMISSION_MODES = ("enforce", "advisory", "off")
DEFAULT_PERMISSIONS_MODE = "enforce"


def _on_unless_zero(env, name):
    value = env.get(name)
    if value is None:
        return True
    return value != "0"


def _one_or_true(env, name):
    value = env.get(name)
    if value is None:
        return False
    return value == "1" or value.lower() == "true"


def fed_require_sig(env):
    """``src/federation/signing.rs::require_sig``: ON unless exactly ``0``."""
    return _on_unless_zero(env, FED_REQUIRE_SIG)


def fed_require_nonce(env):
    """``require_nonce``: same rule as :func:`fed_require_sig`."""
    return _on_unless_zero(env, FED_REQUIRE_NONCE)


def ssrf_dns_fail_open(env):
    """``src/subscriptions.rs::ssrf_dns_fail_open``: open only for ``1``/``true`` (any case)."""
    return _one_or_true(env, SSRF_ALLOW_DNS_FAIL)


def governance_fail_open_on_error(env):
    """``governance_fail_open_on_error``: open only for ``1``/``true`` (any case)."""
    return _one_or_true(env, GOV_FAIL_OPEN)


def lax_perms_passphrase(env):
    """``passphrase_from_file`` (``--db-passphrase-file``): ``1`` or case-insensitive ``true``."""
    return _one_or_true(env, LAX_PERMS)


def lax_perms_api_key_file(env):
    """``enforce_api_key_file_perms`` (``[llm].api_key_file``): trimmed+lowercased 1/true/yes/on."""
    value = env.get(LAX_PERMS)
    if value is None:
        return False
    return value.strip().lower() in ("1", "true", "yes", "on")


def permissions_mode_env(env):
    """Parse ``AI_MEMORY_PERMISSIONS_MODE``.

    Returns ``(mode_or_None, warning_or_None)``: ``mode`` is the lowercased value when it is one of
    ``enforce|advisory|off`` (NOT trimmed, so ``" enforce"`` is invalid); ``warning`` is the exact
    stderr line upstream prints for an invalid value (the caller then falls back to config).
    Unset -> ``(None, None)``.
    """
    raw = env.get(PERMISSIONS_MODE)
    if raw is None:
        return None, None
    lowered = raw.lower()
    if lowered in VALID_PERMISSION_MODES:
        return lowered, None
    return None, ('ai-memory: AI_MEMORY_PERMISSIONS_MODE="%s" is not a valid mode '
                  '(expected enforce / advisory / off); falling back to config.toml' % raw)


def effective_permissions_mode(env, config, err=None):
    """``effective_permissions_mode``: env (valid) > ``[permissions].mode`` > ``enforce``.

    Returns ``(mode, source)`` with ``source`` one of ``"env"``, ``"config"``, ``"default"``.
    ``err`` (a callable taking one line) receives the invalid-env warning when there is one.
    A config value is used only when it is one of the three lowercase modes (upstream's serde
    rejects anything else at config-parse time, which makes the whole config fall back to
    defaults -- the core's config loader is responsible for that part).
    """
    mode, warning = permissions_mode_env(env)
    if warning is not None and err is not None:
        err(warning)
    if mode is not None:
        return mode, "env"
    perms = (config or {}).get("permissions")
    if isinstance(perms, dict):
        cfg_mode = perms.get("mode")
        if isinstance(cfg_mode, str) and cfg_mode in VALID_PERMISSION_MODES:
            return cfg_mode, "config"
    return DEFAULT_PERMISSIONS_MODE, "default"


def security_env(env, build=None):
    """All v0.7 security switches as a dict.

    For builds without the v0.7 env vars (0.6.4, 0.7.0-tag: ``build.has_v07_env`` false) the
    values are the compiled behaviour of those builds: no federation signature/nonce
    requirement, SSRF and governance fail-closed, no lax-perms bypass.
    """
    if build is not None and not getattr(build, "has_v07_env", True):
        return {
            "fed_require_sig": False,
            "fed_require_nonce": False,
            "ssrf_dns_fail_open": False,
            "governance_fail_open_on_error": False,
            "lax_perms_passphrase": False,
            "lax_perms_api_key_file": False,
        }
    return {
        "fed_require_sig": fed_require_sig(env),
        "fed_require_nonce": fed_require_nonce(env),
        "ssrf_dns_fail_open": ssrf_dns_fail_open(env),
        "governance_fail_open_on_error": governance_fail_open_on_error(env),
        "lax_perms_passphrase": lax_perms_passphrase(env),
        "lax_perms_api_key_file": lax_perms_api_key_file(env),
    }
