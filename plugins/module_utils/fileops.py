# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safe file operations shared by the aimem.fleet modules.

Pure Python (stdlib only, Python 3.8+), no Ansible import, so it is unit-tested on its own.

* ``atomic_write``: temp file in the same directory, fsync, rename, fsync of the directory;
  owner, group and mode of the file it replaces are kept (or given explicitly).
* ``backup_name`` / ``make_backup``: ``<path>.bak.<UTC %Y%m%d-%H%M%S>`` like upstream's
  ``config migrate``, but an existing backup is never overwritten (``.1``, ``.2``... suffix) and
  the backup is never more readable than the original.
"""

from __future__ import absolute_import, division, print_function

import datetime
import errno
import os
import stat
import tempfile

__metaclass__ = type

BACKUP_TS_FORMAT = "%Y%m%d-%H%M%S"


class FileOpError(Exception):
    """An I/O failure with the path it concerns and a hint for the operator."""

    def __init__(self, msg, path=None, hint=None):
        super(FileOpError, self).__init__(msg)
        self.path = path
        self.hint = hint


def utc_timestamp(now=None):
    """UTC timestamp in upstream's backup format (``20260601-224038``)."""
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime(BACKUP_TS_FORMAT)


def backup_name(path, now=None, exists=os.path.lexists):
    """Return a backup path ``<path>.bak.<ts>`` that does not exist yet.

    A same-second collision (upstream silently overwrites) gets ``.1``, ``.2``... appended.
    """
    base = "%s.bak.%s" % (path, utc_timestamp(now))
    candidate = base
    n = 0
    while exists(candidate):
        n += 1
        candidate = "%s.%d" % (base, n)
    return candidate


def restrict_mode(source_mode, default_mode=0o600):
    """Mode for a copy of a file: never more permissive than the source's permission bits."""
    if source_mode is None:
        return default_mode
    return stat.S_IMODE(source_mode) & 0o777


def file_meta(path):
    """(uid, gid, mode) of ``path`` or None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def fsync_dir(directory):
    """fsync a directory (a rename/link in it is durable); errors are ignored."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def real_target(path):
    """``path`` with symlinks resolved when it is a symlink; ``path`` unchanged otherwise."""
    if os.path.islink(path):
        return os.path.realpath(path)
    return path


def atomic_write(path, data, mode=None, uid=None, gid=None):
    """Write ``data`` (bytes or str) to ``path`` atomically.

    The temp file lives in the target directory (same filesystem, so ``rename`` is atomic; no
    scratch file ever lands in /tmp). When ``path`` exists, its owner, group and mode are kept
    unless given explicitly. Returns the path written.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    # A symlinked file (a config.toml linked into an NFS share) is written through the link: the
    # rename lands on the real file, so the link and every host sharing the target stay intact.
    path = real_target(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    meta = file_meta(path)
    if meta is not None:
        if uid is None:
            uid = meta[0]
        if gid is None:
            gid = meta[1]
        if mode is None:
            mode = meta[2]
    if mode is None:
        mode = 0o644 & ~_current_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    except OSError as e:
        raise FileOpError("cannot create a temporary file in %s: %s" % (directory, e), path=path,
                          hint="check that %s exists and is writable by the remote user" % directory)
    try:
        try:
            os.fchmod(fd, mode)
            if uid is not None or gid is not None:
                try:
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                except OSError as e:
                    if e.errno != errno.EPERM:
                        raise
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise FileOpError("could not write %s: %s" % (path, e), path=path,
                          hint="check free space and permissions on %s" % directory)
    fsync_dir(directory)
    return path


def make_backup(path, now=None):
    """Copy ``path`` to a fresh ``<path>.bak.<ts>`` (owner kept, mode never wider). Returns it.

    A symlink is backed up next to its real file (one backup on a share, not one per link).
    """
    path = real_target(path)
    meta = file_meta(path)
    if meta is None:
        raise FileOpError("cannot back up %s: no such file" % path, path=path)
    with open(path, "rb") as f:
        content = f.read()
    dest = backup_name(path, now=now)
    # O_EXCL: a racing writer can never make us overwrite an existing backup.
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, restrict_mode(meta[2]))
    except OSError as e:
        raise FileOpError("could not write backup %s: %s" % (dest, e), path=dest,
                          hint="check free space and permissions on %s" % os.path.dirname(dest))
    try:
        os.fchmod(fd, restrict_mode(meta[2]))
        try:
            os.fchown(fd, meta[0], meta[1])
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
    return dest


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
