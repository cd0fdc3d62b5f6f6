# -*- coding: utf-8 -*-
# Copyright: aimem.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host run lock of the aimem.fleet playbooks (upgrade / secure / rollback).

Pure Python (stdlib only, Python 3.8+), no Ansible import, so it is unit-tested on its own. Used
by the ``aimem_lock`` module (on the target) and its action plugin (on the controller).

The lock
    One JSON file (for example ``<work_dir>/run.lock``, mode 0600) naming its owner::

        {"version": 1, "run_id": "...", "controller": "ctl1", "pid": 4242, "pid_start": 1234567,
         "boot_id": "...", "pid_ns": "pid:[4026531836]", "user": "ops",
         "playbook": "aimem.fleet.upgrade", "play": "...",
         "acquired_at": "2026-06-01T22:40:38Z", "heartbeat": "2026-06-01T22:41:02Z"}

    ``pid`` is the ansible-playbook main process on ``controller``, ``pid_start`` its start time
    (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) so that a reused pid is not taken
    for the holder, ``boot_id`` the controller's ``/proc/sys/kernel/random/boot_id`` and
    ``pid_ns`` its pid namespace (two containers may share a host name). Times are
    UTC ISO-8601 strings with a ``Z`` and whole seconds, everywhere.

How the file is changed (race-safety)
    * Creation is atomic and exclusive: the content is written to a temp file in the SAME
      directory, fsynced, then ``os.link(tmp, path)``, which fails when the lock exists; the temp
      file is always removed. There is no write-then-check window, and a reader never sees a
      half-written lock.
    * Every read-decide-change sequence (acquire, heartbeat refresh, release, break) runs under
      an ``fcntl.flock`` on the guard file ``<path>.guard`` (0600, empty, never deleted - deleting
      a flock file is what makes flock guards racy). The kernel drops the flock when its process
      dies, so a killed module can never leave the guard held. The guard is held for
      milliseconds; waiting for a busy host is the caller's job (the action plugin polls).
    * Breaking a holder renames the lock aside to ``<path>.broken.<UTC %Y%m%d-%H%M%S>`` (a
      ``.1``, ``.2``... suffix on a same-second collision), re-reads the aside file and puts it
      back (``os.link``, never over a new lock) unless it is still the holder judged breakable;
      then the lock is acquired normally. The newest aside file is KEPT for forensics; older
      ``<path>.broken.*`` files are removed after a successful break.
    * A lock file that is empty or not valid JSON is reported as a holder with ``corrupt: true``
      and ``run_id: "corrupt:<first 12 hex of its sha256>"``; it is held like any other lock
      (never silently overwritten) and can be broken only by that exact run_id or because its
      mtime (its ``heartbeat``) is older than ``stale_after``.
"""

from __future__ import absolute_import, division, print_function

import calendar
import errno
import fcntl
import glob
import hashlib
import json
import os
import time

from ansible_collections.aimem.fleet.plugins.module_utils.fileops import fsync_dir

__metaclass__ = type

LOCK_FORMAT_VERSION = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ASIDE_TS_FORMAT = "%Y%m%d-%H%M%S"
OWNER_FIELDS = ("run_id", "controller", "pid", "pid_start", "boot_id", "pid_ns", "user", "playbook", "play")
GUARD_TIMEOUT = 30.0
MAX_LOCK_BYTES = 65536


class LockError(Exception):
    """An I/O failure on the lock with the path it concerns and a hint for the operator."""

    def __init__(self, msg, path=None, hint=None):
        super(LockError, self).__init__(msg)
        self.path = path
        self.hint = hint


# --------------------------------------------------------------------------- time


def iso(ts):
    """Epoch seconds -> ``2026-06-01T22:40:38Z`` (UTC, whole seconds)."""
    return time.strftime(TIME_FORMAT, time.gmtime(int(ts)))


def parse_iso(text):
    """``2026-06-01T22:40:38Z`` (a fraction is accepted) -> epoch seconds, or None if unparsable."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    base = text[:-1].split(".", 1)[0]
    try:
        return float(calendar.timegm(time.strptime(base, TIME_FORMAT[:-1])))
    except ValueError:
        return None


def heartbeat_age(holder, now=None):
    """Seconds since the holder's heartbeat (never negative), or None when it has none."""
    if not holder:
        return None
    hb = parse_iso(holder.get("heartbeat"))
    if hb is None:
        return None
    if now is None:
        now = time.time()
    return max(0.0, now - hb)


def is_stale(holder, stale_after, now=None):
    """True when ``stale_after`` > 0 and the heartbeat is older than that many seconds.

    A holder without a readable heartbeat is never stale (it is not ours to judge).
    """
    if not stale_after or stale_after <= 0:
        return False
    age = heartbeat_age(holder, now)
    return age is not None and age > stale_after


# --------------------------------------------------------------------------- processes


def proc_start_time(pid, proc="/proc"):
    """Start time of ``pid`` (field 22 of ``/proc/<pid>/stat``, clock ticks since boot).

    None when the process does not exist (or /proc cannot tell). The command name (field 2) may
    contain spaces and parentheses, so fields are counted from the last ``)``.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (IOError, OSError):
        return None
    rest = data[data.rfind(")") + 1:].split()
    # rest[0] is field 3 (state), so field 22 is rest[19]
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def read_boot_id(path="/proc/sys/kernel/random/boot_id"):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except (IOError, OSError):
        return None


def read_pid_ns(pid="self", proc="/proc"):
    """The pid namespace of ``pid`` (``pid:[4026531836]``), or None when it cannot be read."""
    try:
        return os.readlink(os.path.join(proc, str(pid), "ns", "pid"))
    except OSError:
        return None


def holder_liveness(holder, hostname, start_reader=proc_start_time, boot_id=None, pid_ns=None):
    """Judge a holder from the controller: ``"dead"``, ``"alive"`` or ``"unknown"``.

    Only a holder whose ``controller`` is ``hostname`` (this controller) can be judged:
    ``"dead"`` when its ``boot_id`` differs from ours (the controller rebooted), when its ``pid``
    no longer exists, or when that pid's start time differs from ``pid_start`` (the pid was
    reused); otherwise ``"alive"``. Another controller's (another host name, or another pid
    namespace - a container with the same host name) or a corrupt holder is ``"unknown"``.
    ``start_reader(pid)`` returns the start time or None (injectable for tests).
    """
    if not holder or holder.get("corrupt") or not hostname:
        return "unknown"
    if holder.get("controller") != hostname:
        return "unknown"
    try:
        pid = int(holder.get("pid"))
    except (TypeError, ValueError):
        return "unknown"
    if pid <= 0:
        return "unknown"
    if pid_ns and holder.get("pid_ns") and holder.get("pid_ns") != pid_ns:
        return "unknown"
    if boot_id and holder.get("boot_id") and holder.get("boot_id") != boot_id:
        return "dead"
    start = start_reader(pid)
    if start is None:
        return "dead"
    recorded = holder.get("pid_start")
    if recorded is not None:
        try:
            if int(recorded) != int(start):
                return "dead"
        except (TypeError, ValueError):
            return "unknown"
    return "alive"


def make_owner(run_id, controller, pid, pid_start=None, user=None, playbook=None, play=None,
               boot_id=None, pid_ns=None):
    """The owner dict written into the lock (``acquired_at``/``heartbeat`` are added on write)."""
    return {"run_id": run_id, "controller": controller, "pid": pid, "pid_start": pid_start,
            "boot_id": boot_id, "pid_ns": pid_ns, "user": user, "playbook": playbook, "play": play}


def describe(holder, now=None):
    """One line naming a holder for messages."""
    if not holder:
        return "nobody"
    if holder.get("corrupt"):
        return "an unreadable lock file (%s; run id %s, last modified %s)" % (
            holder.get("error"), holder.get("run_id"), holder.get("heartbeat"))
    age = heartbeat_age(holder, now)
    return ("run %s on controller %s (pid %s, user %s, playbook %s) since %s, last heartbeat %s%s" % (
        holder.get("run_id"), holder.get("controller"), holder.get("pid"), holder.get("user"),
        holder.get("playbook") or "?", holder.get("acquired_at"), holder.get("heartbeat"),
        "" if age is None else " (%ds ago)" % int(age)))


# --------------------------------------------------------------------------- reading


def _parse(data, path, mtime):
    """Lock file bytes -> holder dict (a corrupt one when it is not a JSON object with a run_id)."""
    error = None
    holder = None
    if not data.strip():
        error = "empty file"
    else:
        try:
            holder = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            error = "not JSON: %s" % e
        else:
            if not isinstance(holder, dict):
                error = "not a JSON object"
            elif not isinstance(holder.get("run_id"), str) or not holder.get("run_id"):
                error = "no run_id"
    if error is None:
        holder["corrupt"] = False
        return holder
    return {"corrupt": True, "error": error,
            "run_id": "corrupt:" + hashlib.sha256(data).hexdigest()[:12],
            "size": len(data), "heartbeat": iso(mtime), "acquired_at": None,
            "controller": None, "pid": None, "user": None, "playbook": None}


def read_lock(path):
    """The holder of ``path`` as a dict, or None when there is no lock.

    An empty or unparsable file gives ``{"corrupt": True, "run_id": "corrupt:<sha12>",
    "heartbeat": <its mtime>, "error": ...}`` (held, see the module docstring). Raises LockError
    when the file exists but cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        if e.errno == errno.ENOTDIR:
            raise LockError("cannot read the lock %s: %s" % (path, e), path=path,
                            hint="%s is not a directory" % os.path.dirname(path))
        raise LockError("cannot read the lock %s: %s" % (path, e), path=path,
                        hint="run the task as a user that can read %s (become: true), and make sure"
                             " it is a regular file, not a symlink" % path)
    try:
        st = os.fstat(fd)
        chunks = []
        total = 0
        while total <= MAX_LOCK_BYTES:
            chunk = os.read(fd, 8192)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return _parse(b"".join(chunks)[:MAX_LOCK_BYTES + 1], path, st.st_mtime)


# --------------------------------------------------------------------------- writing helpers


def _dir_of(path):
    return os.path.dirname(os.path.abspath(path)) or "."


def _io_error(action, path, e):
    directory = _dir_of(path)
    if e.errno == errno.ENOENT and not os.path.isdir(directory):
        hint = ("the lock directory %s does not exist; create it first (the play's work directory,"
                " owned by root, mode 0700)" % directory)
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = ("%s is not writable by this user; run the task with become: true, or point the lock"
                " path at a writable directory next to the data" % directory)
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space on the filesystem of %s" % directory
    elif e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        hint = ("the filesystem of %s supports neither flock nor hard links; put the lock on a local"
                " filesystem" % directory)
    else:
        hint = "check %s (exists, is a directory, writable, free space)" % directory
    return LockError("cannot %s %s: %s" % (action, path, e), path=path, hint=hint)


class _Guard(object):
    """``flock`` on ``<path>.guard`` for the duration of a read-decide-change sequence."""

    def __init__(self, path, timeout=GUARD_TIMEOUT):
        self.path = path + ".guard"
        self.lock_path = path
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as e:
            raise _io_error("create the lock guard", self.path, e)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError) as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(self.fd)
                    raise _io_error("lock the guard", self.path, e)
            if time.monotonic() >= deadline:
                os.close(self.fd)
                raise LockError("the lock guard %s stayed busy for %ds" % (self.path, self.timeout),
                                path=self.path,
                                hint="a process hangs inside the lock code (for example on a stuck"
                                     " filesystem); find it with 'fuser %s'" % self.path)
            time.sleep(0.01)

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
        return False


def _write_tmp(path, content):
    """Write ``content`` to a fresh 0600 temp file next to ``path``, fsynced. Returns its name."""
    directory = _dir_of(path)
    base = os.path.basename(path)
    data = (json.dumps(content, sort_keys=True, indent=1) + "\n").encode("utf-8")
    for n in range(100):
        tmp = os.path.join(directory, ".%s.%d.%d.%s.tmp" % (base, os.getpid(), n,
                                                             hashlib.sha1(os.urandom(8)).hexdigest()[:8]))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            break
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise _io_error("create a temporary file for", path, e)
    else:  # pragma: no cover - 100 random collisions
        raise LockError("cannot create a temporary file for %s" % path, path=path)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        _unlink_quiet(tmp)
        raise _io_error("write a temporary file for", path, e)
    return tmp


def _unlink_quiet(p):
    try:
        os.unlink(p)
    except OSError:
        pass


def _create_exclusive(path, content):
    """Create the lock with ``content`` atomically. True when created, False when it exists."""
    tmp = _write_tmp(path, content)
    try:
        try:
            os.link(tmp, path)
        except OSError as e:
            if e.errno == errno.EEXIST:
                return False
            raise _io_error("create the lock", path, e)
    finally:
        _unlink_quiet(tmp)
    fsync_dir(_dir_of(path))
    return True


def _replace(path, content):
    """Replace the lock's content atomically (only by its owner, under the guard)."""
    tmp = _write_tmp(path, content)
    try:
        os.rename(tmp, path)
    except OSError as e:
        _unlink_quiet(tmp)
        raise _io_error("refresh the lock", path, e)
    fsync_dir(_dir_of(path))


def aside_name(path, now=None, exists=os.path.lexists):
    """``<path>.broken.<UTC %Y%m%d-%H%M%S>`` that does not exist yet (``.1``, ``.2``... appended)."""
    if now is None:
        now = time.time()
    base = "%s.broken.%s" % (path, time.strftime(ASIDE_TS_FORMAT, time.gmtime(int(now))))
    candidate = base
    n = 0
    while exists(candidate):
        n += 1
        candidate = "%s.%d" % (base, n)
    return candidate


def _same_holder(a, b):
    return bool(a) and bool(b) and a.get("run_id") == b.get("run_id") and \
        bool(a.get("corrupt")) == bool(b.get("corrupt"))


def _move_aside(path, holder, now):
    """Rename the lock aside if it still is ``holder``. Returns the aside path or None."""
    aside = aside_name(path, now)
    try:
        os.rename(path, aside)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise _io_error("move the lock aside from", path, e)
    moved = read_lock(aside)
    if not _same_holder(moved, holder):
        # Not the holder we judged breakable: put it back, never over a lock made meanwhile.
        try:
            os.link(aside, path)
            os.unlink(aside)
        except OSError:
            pass
        return None
    fsync_dir(_dir_of(path))
    return aside


def _prune_asides(path, keep):
    for old in glob.glob(glob.escape(path) + ".broken.*"):
        if old != keep:
            _unlink_quiet(old)


# --------------------------------------------------------------------------- operations


def _breakable(holder, stale_after, break_holder, now):
    """Why ``holder`` may be broken ("break_holder" / "stale") or None."""
    if holder is None:
        return None
    if break_holder and break_holder == holder.get("run_id"):
        return "break_holder"
    if is_stale(holder, stale_after, now):
        return "stale"
    return None


def _result(path, **kw):
    res = {"path": path, "acquired": False, "released": False, "changed": False, "held_by": None,
           "broken": None, "broken_path": None, "broken_reason": None, "refreshed": False}
    res.update(kw)
    return res


def acquire(path, owner, stale_after=0, break_holder=None, check_mode=False, now=None):
    """Take the lock ``path`` for ``owner`` (a dict with at least ``run_id``).

    Returns a dict: ``acquired`` (bool), ``changed`` (True only when the lock file was created for
    us; a re-acquire by the same run_id only refreshes ``heartbeat`` and the owner fields and
    reports False), ``refreshed``, ``held_by`` (the holder after the call: us when acquired, the
    other run when not, None in check mode when nobody holds it), ``broken`` (the holder that was
    broken, or None), ``broken_path`` (where its lock was moved), ``broken_reason``
    (``break_holder`` / ``stale``). A lock held by another run is NOT an error: ``acquired`` is
    False. With ``check_mode`` nothing is written (not even the guard file); the result tells
    what would happen. Raises LockError on I/O errors.
    """
    run_id = owner.get("run_id") if owner else None
    if not run_id or not isinstance(run_id, str):
        raise LockError("cannot take the lock %s without a run_id" % path, path=path,
                        hint="pass the run id of the playbook run (owner.run_id)")
    if run_id.startswith("corrupt:"):
        raise LockError("run_id %r is reserved for unreadable lock files" % run_id, path=path,
                        hint="use another run id")
    if now is None:
        now = time.time()
    stamp = iso(now)
    directory = _dir_of(path)
    if not os.path.isdir(directory):
        raise LockError("cannot take the lock %s: directory %s does not exist" % (path, directory),
                        path=path, hint="create %s first (the play's work directory, owned by root,"
                                        " mode 0700)" % directory)
    content = dict((k, owner.get(k)) for k in OWNER_FIELDS)
    content.update({"version": LOCK_FORMAT_VERSION, "acquired_at": stamp, "heartbeat": stamp})

    if check_mode:
        holder = read_lock(path)
        if holder is None:
            return _result(path, acquired=True, changed=True)
        if not holder.get("corrupt") and holder.get("run_id") == run_id:
            return _result(path, acquired=True, refreshed=True, held_by=holder)
        reason = _breakable(holder, stale_after, break_holder, now)
        if reason:
            return _result(path, acquired=True, changed=True, broken=holder, broken_reason=reason)
        return _result(path, held_by=holder)

    with _Guard(path):
        holder = read_lock(path)
        if holder is not None and not holder.get("corrupt") and holder.get("run_id") == run_id:
            refreshed = dict(holder)
            refreshed.pop("corrupt", None)
            for k in OWNER_FIELDS:
                if owner.get(k) is not None:
                    refreshed[k] = owner.get(k)
            refreshed["heartbeat"] = stamp
            refreshed.setdefault("acquired_at", stamp)
            _replace(path, refreshed)
            return _result(path, acquired=True, refreshed=True, held_by=read_lock(path))
        broken = broken_path = reason = None
        if holder is not None:
            reason = _breakable(holder, stale_after, break_holder, now)
            if reason is None:
                return _result(path, held_by=holder)
            broken_path = _move_aside(path, holder, now)
            if broken_path is None:  # changed under us (only possible without the guard)
                return _result(path, held_by=read_lock(path))
            broken = holder
        if not _create_exclusive(path, content):
            return _result(path, held_by=read_lock(path), broken=broken, broken_path=broken_path,
                           broken_reason=reason, changed=broken is not None)
        if broken_path:
            _prune_asides(path, keep=broken_path)
        return _result(path, acquired=True, changed=True, held_by=read_lock(path), broken=broken,
                       broken_path=broken_path, broken_reason=reason)


def release(path, run_id, break_holder=None, check_mode=False, now=None):
    """Remove the lock ``path`` if it holds ``run_id``.

    Held by another run: nothing is touched, ``held_by`` names it and ``changed`` is False -
    unless ``break_holder`` is that run's exact run_id, then its lock is moved aside like a break
    (``broken``). No lock: nothing to do. ``released`` tells whether our lock was removed.
    """
    if now is None:
        now = time.time()
    if check_mode:
        holder = read_lock(path)
        if holder is None:
            return _result(path)
        if not holder.get("corrupt") and run_id and holder.get("run_id") == run_id:
            return _result(path, released=True, changed=True)
        if break_holder and break_holder == holder.get("run_id"):
            return _result(path, changed=True, broken=holder, broken_reason="break_holder")
        return _result(path, held_by=holder)
    if not os.path.isdir(_dir_of(path)):
        return _result(path)
    with _Guard(path):
        holder = read_lock(path)
        if holder is None:
            return _result(path)
        if not holder.get("corrupt") and run_id and holder.get("run_id") == run_id:
            try:
                os.unlink(path)
            except OSError as e:
                raise _io_error("remove the lock", path, e)
            fsync_dir(_dir_of(path))
            return _result(path, released=True, changed=True)
        if break_holder and break_holder == holder.get("run_id"):
            aside = _move_aside(path, holder, now)
            if aside is None:
                return _result(path, held_by=read_lock(path))
            _prune_asides(path, keep=aside)
            return _result(path, changed=True, broken=holder, broken_path=aside,
                           broken_reason="break_holder")
        return _result(path, held_by=holder)
