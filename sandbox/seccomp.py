"""Seccomp: the system calls no sandboxed program may make, for both backends.

Namespaces are the kernel attack surface most container escapes start from: a program that
can `unshare(CLONE_NEWUSER)` holds a full capability set inside the new namespace and can
reach mount, netfilter and filesystem code written for root. So every backend refuses the
namespace calls (`unshare`, `setns`, `clone` with a namespace flag; `clone3`, whose flags
seccomp cannot see, answers ENOSYS so the C library falls back to `clone`), the mount family,
the kernel keyring, `bpf`, `userfaultfd`, `perf_event_open`, io_uring and the
module / kexec / reboot calls. Refused calls fail with EPERM; the program goes on.

- Docker: `seccomp_profile.json` beside this module is the engine's default profile (moby's
  `profiles/seccomp/default.json`, Apache-2.0, at commit 3c28324) with every BLOCKED call taken
  out of every allow rule, including the ones the default re-allows for CAP_SYS_ADMIN & co.,
  `clone` allowed only without namespace flags whatever the capabilities, and an explicit
  EPERM rule for the rest. tests/sandbox/make_seccomp_profile.py rebuilds it from upstream.
- bubblewrap: the same list compiled to a BPF program by libseccomp (through `pyseccomp`),
  handed to `bwrap --seccomp FD`. Default allow (the host's /usr is the image there), but
  a foreign architecture (32-bit or x32 calls on x86_64) kills the caller.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import tempfile
from importlib import resources
from typing import Any

from sandbox.base import SandboxError

PROFILE_RESOURCE = "seccomp_profile.json"

# Every CLONE_NEW* flag `clone` takes (moby's mask: 0x7E020000). CLONE_NEWTIME (0x80) is
# only valid for unshare/clone3 and overlaps clone's exit-signal byte, so it is not here.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

# Refused outright, whatever the arguments. `clone` and `clone3` are handled separately.
BLOCKED_SYSCALLS: tuple[str, ...] = (
    # namespaces
    "unshare",
    "setns",
    # mounts and the root directory
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # the kernel keyring
    "keyctl",
    "add_key",
    "request_key",
    # large kernel attack surfaces reachable without privileges
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # the host itself: modules, kexec, reboot, swap, accounting, raw file handles, logs
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "open_by_handle_at",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "fanotify_init",
)


def docker_profile() -> dict[str, Any]:
    """The Docker seccomp profile shipped with the package, parsed."""
    text = resources.files("sandbox").joinpath(PROFILE_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def docker_profile_text() -> str:
    """The profile as compact JSON: what the Docker Engine API takes inline in SecurityOpt."""
    return json.dumps(docker_profile(), separators=(",", ":"), sort_keys=True)


@functools.cache
def bwrap_filter() -> bytes:
    """The BLOCKED list as a classic BPF program for `bwrap --seccomp FD` (cached).

    Raises SandboxError when libseccomp cannot be loaded: running without the filter would
    silently give agent code the namespace calls back.
    """
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError) as exc:
        raise SandboxError(
            f"cannot build the sandbox's seccomp filter: libseccomp unavailable ({exc});"
            " install libseccomp2 and the pyseccomp package"
        ) from exc
    eperm = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    for name in BLOCKED_SYSCALLS:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) == _NR_SCMP_ERROR:
            continue  # a call this libseccomp has never heard of cannot be named in BPF
        flt.add_rule(eperm, name)
    # clone's flags are its first argument, except on s390 where they are the second.
    flags_arg = 1 if sc.system_arch() in (sc.Arch.S390, sc.Arch.S390X) else 0
    for bit in _bits(CLONE_NAMESPACE_FLAGS):
        flt.add_rule(eperm, "clone", sc.Arg(flags_arg, sc.MASKED_EQ, bit, bit))
    # clone3 passes its flags in memory, out of seccomp's sight: ENOSYS makes glibc use clone.
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0, io.SEEK_SET)
        program = out.read()
    if not program or len(program) % _SOCK_FILTER_SIZE:
        raise SandboxError(f"libseccomp exported a malformed BPF program ({len(program)} bytes)")
    return program


_NR_SCMP_ERROR = -1  # libseccomp's "no such system call"
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask >> i & 1]
