"""Python stand-in for the ``ai-memory`` binary (test-only, never shipped).

Mirrors the behaviour documented in /work/shared/reference/ai-memory-facts.md (§9 and the
sections it cites) closely enough for the aimem.fleet upgrade tests.  Four builds exist
(see :mod:`aimem_standin.builds`): ``0.6.4``, ``0.7.0`` (release/v0.7.0 branch),
``0.7.0-tag`` (the v0.7.0 tag) and ``0.7.0-sal`` (branch + ``schema-init``).

Which build runs:
* a packed binary (``tests/standin/build.py``) carries a generated ``aimem_standin/_build.py``
  with ``BUILD = "<name>"``; that always wins;
* otherwise (dev runs: ``python -m aimem_standin``) the env var ``AIMEM_STANDIN_BUILD`` selects it
  (default ``0.7.0``).

Subcommand modules are ``cmd_<name>.py`` (``-`` -> ``_``) exposing ``OWN_JSON`` and
``run(ctx, argv) -> int``; optionally ``OWN_GLOBALS`` (a set of global option names such as
``{"--agent-id"}`` that the subcommand defines itself, so that after the subcommand name they stay
in ``argv`` instead of being consumed as globals — clap does not propagate a global into a
subcommand that defines the same id) and ``HELP`` (text for ``<sub> --help``).

Test hooks (stand-in only, for fault injection):
* ``AIMEM_STANDIN_IGNORE_SIGINT=1``: ``serve`` and ``mcp`` ignore SIGINT and SIGTERM (a daemon that
  will not stop; only SIGKILL ends it).
"""
