"""The kernel mechanisms that confine a script host process, and what this machine offers.

Layers, each applied by the host process to itself before it reads any request:

- a different, unprivileged user when the controller is root (`drop_privileges`):
  every capability dropped from the bounding set, supplementary groups cleared;
- `PR_SET_NO_NEW_PRIVS` (no set-uid binary or file capability can give them back)
  and `PR_SET_DUMPABLE 0` (no other process of that user may ptrace it or read its
  `/proc` files);
- Landlock (`restrict_filesystem`): read-only system paths and the Python
  installation, read-write on the host's own temporary directory and the profile's
  grants, nothing else; and, from ABI 6, signals and abstract unix sockets scoped
  to the host's own domain. Landlock also denies ptrace of any process outside
  the domain, on every ABI;
- a child subreaper: every process the script starts is re-parented to the host
  when its parent exits, so that the host can kill and reap it after the call.

Nothing here imports the rest of certpilot: the zygote and the host use it after a
clean start.
"""

from __future__ import annotations

import ctypes
import os
import platform
import pwd
import signal
from dataclasses import dataclass

from certpilot.domain.paths import guard, reach

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"

# <linux/landlock.h>; the syscall numbers are the same on every architecture
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
DEVICE_RW = FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV

# What a script reads besides the Python installation: programs and libraries, CA
# bundles, name resolution, time zones, user names. Never /etc as a whole.
SYSTEM_READ_PATHS = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/crypto-policies",
    "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf",
    "/etc/services", "/etc/protocols", "/etc/localtime", "/etc/timezone", "/etc/passwd", "/etc/group",
    "/etc/mime.types", "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
)
DEVICE_PATHS = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/full")

DEFAULT_SCRIPT_USER = "certpilot-script"
FALLBACK_SCRIPT_USER = "nobody"


class SandboxError(Exception):
    """A layer that should apply could not be applied: the host must not run the script."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"prctl({option}) failed: {os.strerror(err)}")


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers, or 0 when it offers none."""
    if platform.system() != "Linux":
        return 0
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return int(version) if version > 0 else 0


@dataclass(frozen=True)
class ScriptUser:
    uid: int
    gid: int
    name: str


def resolve_script_user(name: str | None) -> ScriptUser | None:
    """The user scripts run as, or None when the controller is not root (scripts then run
    as the controller's own user: it has no other to give). Raises `SandboxError` when a
    named user does not exist or is root."""
    if os.geteuid() != 0:
        return None
    candidates = [name] if name else [DEFAULT_SCRIPT_USER, FALLBACK_SCRIPT_USER]
    for candidate in candidates:
        try:
            entry = pwd.getpwnam(candidate)
        except KeyError:
            continue
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise SandboxError(f"CERTPILOT_SCRIPT_USER {candidate!r} is root; scripts never run as root")
        return ScriptUser(entry.pw_uid, entry.pw_gid, candidate)
    raise SandboxError(f"the script user {candidates[0]!r} does not exist: create it or set CERTPILOT_SCRIPT_USER")


def ensure_default_script_user() -> str | None:
    """When root and the default script user does not exist, create it as a system user
    with no home and no login shell. Returns a sentence when it could not be created
    (scripts then run as `nobody`), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(DEFAULT_SCRIPT_USER)
        return None
    except KeyError:
        pass
    import shutil
    import subprocess

    useradd = shutil.which("useradd") or ("/usr/sbin/useradd" if os.path.exists("/usr/sbin/useradd") else None)
    if useradd is None:
        return f"no useradd to create {DEFAULT_SCRIPT_USER!r}: scripts run as {FALLBACK_SCRIPT_USER!r}"
    done = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", "certpilot issuer scripts", DEFAULT_SCRIPT_USER],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if done.returncode != 0:
        try:  # another process made it at the same moment
            pwd.getpwnam(DEFAULT_SCRIPT_USER)
            return None
        except KeyError:
            return f"could not create {DEFAULT_SCRIPT_USER!r} ({done.stderr.strip()}): scripts run as {FALLBACK_SCRIPT_USER!r}"
    return None


def describe(user: ScriptUser | None) -> str:
    """One sentence on how scripts run here."""
    who = f"as {user.name} (uid {user.uid})" if user else f"as certpilot's own user (uid {os.geteuid()})"
    abi = landlock_abi()
    fs = f"Landlock ABI {abi}" if abi else "no Landlock"
    return f"issuer scripts run {who}, no capabilities, no new privileges, {fs}, one warm host per profile"


def limitations(user: ScriptUser | None) -> list[str]:
    """One sentence per layer this machine cannot apply: empty when every layer holds."""
    notes = []
    abi = landlock_abi()
    if abi == 0:
        notes.append("Landlock is not available on this kernel: scripts can read and write every file their user can.")
    elif abi < 6:
        notes.append(f"Landlock ABI {abi} has no signal scoping (ABI 6): scripts can signal other processes of their user.")
    if user is None and os.geteuid() != 0:
        notes.append("certpilot does not run as root, so scripts run as its own user: only Landlock separates them from its files.")
    return notes


# --- applied in the host process, in this order ---------------------------------


def become_subreaper() -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    _prctl(PR_SET_PDEATHSIG, int(sig))


def drop_privileges(user: ScriptUser | None) -> None:
    """Become `user` with no capability left to regain; then no new privileges, ever."""
    if user is not None:
        try:
            last_cap = int(open(CAP_LAST_CAP_FILE).read())
        except OSError:
            last_cap = 40
        for cap in range(last_cap + 1):
            _prctl(PR_CAPBSET_DROP, cap)
        os.setgroups([])
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        if os.geteuid() == 0 or os.getegid() == 0:
            raise SandboxError("could not leave root")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_DUMPABLE, 0)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _handled_fs(abi: int) -> int:
    handled = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        handled |= FS_REFER
    if abi >= 3:
        handled |= FS_TRUNCATE
    if abi >= 5:
        handled |= FS_IOCTL_DEV
    return handled


def restrict_filesystem(read_paths: list[str], write_paths: list[str]) -> int:
    """Landlock this process (and all it starts): `read_paths` readable and executable,
    `write_paths` fully usable, nothing else; signals and abstract sockets scoped where
    the ABI has it. Network is left alone. Paths that do not exist are skipped.
    Returns the ABI used. Raises `SandboxError` when Landlock is present but fails."""
    abi = landlock_abi()
    if abi == 0:
        return 0
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled_access_fs=handled, handled_access_net=0,
                        scoped=(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise SandboxError(f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        grants = [(p, READ_ONLY) for p in read_paths] + [(p, DEVICE_RW) for p in DEVICE_PATHS]
        grants += [(p, handled) for p in write_paths]
        for path, access in grants:
            _add_path_rule(int(ruleset), path, access & handled)
        if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise SandboxError(f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(int(ruleset))
    return abi


def _add_path_rule(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # absent on this system: nothing to grant
    try:
        if not os.path.isdir(path):
            access &= FILE_ONLY
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                         ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise SandboxError(f"landlock_add_rule({path}) failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def python_read_paths(sys_path: list[str], prefixes: list[str]) -> list[str]:
    """The Python installation: its prefixes and every existing import path."""
    paths = []
    for entry in [*prefixes, *sys_path]:
        if entry and os.path.isabs(entry) and os.path.exists(entry):
            paths.append(os.path.realpath(entry))
    return sorted(set(paths))


def without_forbidden(paths: list[str], forbidden: list[str]) -> list[str]:
    """`paths` less any that is, contains or lies inside a forbidden path (the data dir,
    the master key, the database), by the same rule that refuses such a grant: a grant
    can never reach them."""
    guarded = guard([("protected path", f) for f in forbidden])
    return [p for p in paths if reach(p, guarded) is None]
