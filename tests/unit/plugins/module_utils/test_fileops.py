import datetime
import os
import stat

import pytest

from ansible_collections.aimem.fleet.plugins.module_utils import fileops

NOW = datetime.datetime(2026, 6, 1, 22, 40, 38, tzinfo=datetime.timezone.utc)


def test_backup_name_is_utc_upstream_format(tmp_path):
    p = tmp_path / "config.toml"
    assert fileops.backup_name(str(p), now=NOW) == str(p) + ".bak.20260601-224038"


def test_backup_never_overwrites_same_second(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("a = 1\n")
    first = fileops.make_backup(str(p), now=NOW)
    p.write_text("a = 2\n")
    second = fileops.make_backup(str(p), now=NOW)
    assert first.endswith(".bak.20260601-224038")
    assert second == first + ".1"
    assert open(first).read() == "a = 1\n"
    assert open(second).read() == "a = 2\n"


def test_backup_not_more_readable_than_source(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("api_key = 'x'\n")
    os.chmod(str(p), 0o600)
    old = os.umask(0)
    try:
        b = fileops.make_backup(str(p), now=NOW)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(b).st_mode) == 0o600


def test_backup_of_missing_file_fails_with_path(tmp_path):
    with pytest.raises(fileops.FileOpError) as e:
        fileops.make_backup(str(tmp_path / "nope.toml"))
    assert "nope.toml" in str(e.value)


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("old\n")
    os.chmod(str(p), 0o640)
    fileops.atomic_write(str(p), "new\n")
    assert p.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(str(p)).st_mode) == 0o640
    assert sorted(os.listdir(str(tmp_path))) == ["config.toml"]


def test_atomic_write_new_file_explicit_mode(tmp_path):
    p = tmp_path / "key"
    fileops.atomic_write(str(p), b"secret", mode=0o400)
    assert stat.S_IMODE(os.stat(str(p)).st_mode) == 0o400
    assert p.read_bytes() == b"secret"


def test_atomic_write_missing_dir_names_dir(tmp_path):
    with pytest.raises(fileops.FileOpError) as e:
        fileops.atomic_write(str(tmp_path / "missing" / "f"), "x")
    assert "missing" in str(e.value)
    assert e.value.hint


def test_restrict_mode():
    assert fileops.restrict_mode(0o100600) == 0o600
    assert fileops.restrict_mode(None) == 0o600


def test_atomic_write_through_symlink_keeps_the_link_and_writes_the_share(tmp_path):
    share = tmp_path / "nfs"
    share.mkdir()
    real = share / "config.toml"
    real.write_text("old\n")
    home = tmp_path / "home"
    home.mkdir()
    link = home / "config.toml"
    link.symlink_to(real)
    written = fileops.atomic_write(str(link), "new\n")
    assert link.is_symlink() and os.readlink(str(link)) == str(real)
    assert real.read_text() == "new\n" and written == str(real)
    assert sorted(p.name for p in home.iterdir()) == ["config.toml"]


def test_backup_of_a_symlink_lands_next_to_the_real_file(tmp_path):
    share = tmp_path / "nfs"
    share.mkdir()
    real = share / "config.toml"
    real.write_text("v1\n")
    os.chmod(str(real), 0o640)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    dest = fileops.make_backup(str(link))
    assert os.path.dirname(dest) == str(share)
    assert open(dest).read() == "v1\n"
    assert os.stat(dest).st_mode & 0o777 == 0o640
