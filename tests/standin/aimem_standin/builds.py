"""The four stand-in builds (facts §0, §9)."""
import os

SUBCOMMANDS_064 = frozenset("""
serve mcp store update recall search get list delete promote forget link consolidate gc stats
namespaces export import resolve shell sync sync-daemon auto-consolidate completions man mine
archive agents pending backup restore curator bench doctor boot install wrap logs audit
""".split())

# present in every v0.7.0 build (tag and branch) on top of the 0.6.4 set
_V07_COMMON = frozenset(["governance", "identity", "verify-signed-events-chain", "namespace"])


class Build(object):
    def __init__(self, name, version, schema_target, doctor_sections, subcommands,
                 has_v07_env, is_v07):
        self.name = name                        # "0.6.4" | "0.7.0" | "0.7.0-tag" | "0.7.0-sal"
        self.version = version                  # what --version prints after "ai-memory "
        self.schema_target = schema_target      # CURRENT_SCHEMA_VERSION
        self.doctor_sections = doctor_sections  # local-mode doctor section count
        self.subcommands = frozenset(subcommands)
        self.has_v07_env = has_v07_env          # FED_*/SSRF/GOV_FAIL_OPEN/LAX_PERMS + LLM env exist
        self.is_v07 = is_v07                    # any 0.7.0 build (tag or branch)

    @property
    def has_config_cmd(self):
        return "config" in self.subcommands

    @property
    def has_llm_reachability(self):
        return self.doctor_sections >= 9

    @property
    def expands_db_tilde(self):
        # #507 expand_tilde of the config `db` value is new in v0.7.0
        return self.is_v07

    @property
    def min_supported_schema(self):
        return 16

    def __repr__(self):
        return "Build(%r)" % self.name


BUILDS = {
    "0.6.4": Build("0.6.4", "0.6.4", 20, 7, SUBCOMMANDS_064, False, False),
    "0.7.0": Build("0.7.0", "0.7.0", 54, 9, SUBCOMMANDS_064 | _V07_COMMON | {"config"},
                   True, True),
    "0.7.0-tag": Build("0.7.0-tag", "0.7.0", 42, 8, SUBCOMMANDS_064 | _V07_COMMON, False, True),
    "0.7.0-sal": Build("0.7.0-sal", "0.7.0", 54, 9,
                       SUBCOMMANDS_064 | _V07_COMMON | {"config", "schema-init", "migrate"},
                       True, True),
}

DEFAULT_BUILD = "0.7.0"


def current_build_name():
    try:
        from aimem_standin import _build  # generated into packed binaries by build.py
        return _build.BUILD
    except ImportError:
        return os.environ.get("AIMEM_STANDIN_BUILD") or DEFAULT_BUILD


def current_build():
    name = current_build_name()
    try:
        return BUILDS[name]
    except KeyError:
        raise SystemExit("ai-memory stand-in: unknown build %r (expected one of %s)"
                         % (name, ", ".join(sorted(BUILDS))))
