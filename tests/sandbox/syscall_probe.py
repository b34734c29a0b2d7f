"""Runs INSIDE a sandbox: tries the calls the seccomp policy refuses and prints what happened.

Standard library only (the sandbox image is a bare Debian python3). Prints one JSON object:
each attempt's name mapped to "ok" (the call succeeded: an escape) or the errno's name, plus
the process's capability, seccomp and no-new-privileges status and positive controls showing
that ordinary process creation still works. System call numbers are written out here, from
the kernel's tables, rather than taken from libseccomp, so the test does not trust the library
that built the filter.
"""

import ctypes
import errno
import json
import os
import platform
import subprocess
import sys
import threading

# Kernel system call numbers: arch/x86/entry/syscalls/syscall_64.tbl and the generic table
# (include/uapi/asm-generic/unistd.h) that arm64 uses.
NUMBERS = {
    "x86_64": {
        "clone": 56,
        "clone3": 435,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "open_tree": 428,
        "fsopen": 430,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "bpf": 321,
        "userfaultfd": 323,
        "perf_event_open": 298,
        "io_uring_setup": 425,
        "init_module": 175,
    },
    "aarch64": {
        "clone": 220,
        "clone3": 435,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "chroot": 51,
        "open_tree": 428,
        "fsopen": 430,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "bpf": 280,
        "userfaultfd": 282,
        "perf_event_open": 241,
        "io_uring_setup": 425,
        "init_module": 105,
    },
}

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17
AT_FDCWD = -100
MNT_DETACH = 2
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3
UFFD_USER_MODE_ONLY = 1

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _arg(value):
    if isinstance(value, int):
        return ctypes.c_long(value)
    if isinstance(value, str):
        return ctypes.c_char_p(value.encode())
    return value  # a ctypes buffer or None


def call(name, *args):
    """Raw system call by number; the result, or the errno's name when it failed."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(NR[name]), *[_arg(a) for a in args])
    if result == -1:
        code = ctypes.get_errno()
        return errno.errorcode.get(code, str(code))
    return result


def status():
    """Capability, seccomp and no-new-privileges lines of /proc/self/status."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: fields[k].strip() for k in ("CapEff", "CapPrm", "Seccomp", "NoNewPrivs")}


def outcome(result, fd=False):
    """ "ok" for a call that succeeded, else its errno name; a returned `fd` is closed."""
    if isinstance(result, str):
        return result
    if fd:
        os.close(result)
    return "ok"


def clone(flags):
    """clone() with `flags` like fork; the child leaves at once. "ok" means it was allowed."""
    pid = call("clone", flags | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if isinstance(pid, str):
        return pid
    os.waitpid(pid, 0)
    return "ok"


def clone3(flags):
    """clone3() with `flags`; struct clone_args version 2 is 11 u64 fields (88 bytes)."""
    args = (ctypes.c_uint64 * 11)()
    args[0] = flags
    args[4] = SIGCHLD
    pid = call("clone3", ctypes.byref(args), ctypes.sizeof(args))
    if pid == 0:
        os._exit(0)
    if isinstance(pid, str):
        return pid
    os.waitpid(pid, 0)
    return "ok"


def unshare(flags):
    result = call("unshare", flags)
    if result == 0:  # an escape: say what the new namespace handed over
        return "ok CapEff=" + status()["CapEff"]
    return outcome(result)


def setns():
    fd = os.open("/proc/self/ns/user", os.O_RDONLY)
    try:
        return outcome(call("setns", fd, CLONE_NEWUSER))
    finally:
        os.close(fd)


def attempts():
    buf = ctypes.create_string_buffer(256)  # zeroed attr / params structs
    return {
        "unshare(NEWUSER|NEWNS)": lambda: unshare(CLONE_NEWUSER | CLONE_NEWNS),
        "unshare(NEWUSER)": lambda: unshare(CLONE_NEWUSER),
        "unshare(NEWNET)": lambda: unshare(CLONE_NEWNET),
        "clone(NEWUSER)": lambda: clone(CLONE_NEWUSER),
        "clone(NEWNS)": lambda: clone(CLONE_NEWNS),
        "clone3(NEWUSER)": lambda: clone3(CLONE_NEWUSER),
        "setns(user)": setns,
        "mount(tmpfs)": lambda: outcome(call("mount", "none", "/tmp", "tmpfs", 0, None)),
        "umount2(/proc)": lambda: outcome(call("umount2", "/proc", MNT_DETACH)),
        "pivot_root": lambda: outcome(call("pivot_root", ".", ".")),
        "chroot": lambda: outcome(call("chroot", "/tmp")),
        "open_tree": lambda: outcome(call("open_tree", AT_FDCWD, "/tmp", 0), fd=True),
        "fsopen": lambda: outcome(call("fsopen", "tmpfs", 0), fd=True),
        "keyctl": lambda: outcome(
            call("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1)
        ),
        "add_key": lambda: outcome(
            call("add_key", "user", "sbx", "secret", 6, KEY_SPEC_PROCESS_KEYRING)
        ),
        "request_key": lambda: outcome(call("request_key", "user", "sbx", None, 0)),
        "bpf": lambda: outcome(call("bpf", 0, buf, 72), fd=True),  # BPF_MAP_CREATE
        "userfaultfd": lambda: outcome(call("userfaultfd", UFFD_USER_MODE_ONLY), fd=True),
        "perf_event_open": lambda: outcome(call("perf_event_open", buf, 0, -1, -1, 0), fd=True),
        "io_uring_setup": lambda: outcome(call("io_uring_setup", 1, buf), fd=True),
        "init_module": lambda: outcome(call("init_module", None, 0, "")),
    }


def controls():
    """Ordinary process and thread creation still works under the filter."""
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    try:
        spawned = subprocess.run(["/bin/sh", "-c", "echo spawned"], capture_output=True, text=True)
    except OSError as exc:  # after an escape the root may have moved
        spawned = subprocess.CompletedProcess([], 1, str(exc))
    box = []
    thread = threading.Thread(target=lambda: box.append("thread"))
    thread.start()
    thread.join()
    return {
        "fork": "ok" if forked else "failed",
        "spawn": "ok" if spawned.stdout == "spawned\n" else "failed",
        "thread": "ok" if box == ["thread"] else "failed",
    }


if __name__ == "__main__":
    machine = platform.machine()
    if machine not in NUMBERS:
        print(json.dumps({"skip": machine}))
        sys.exit(0)
    NR = NUMBERS[machine]
    report = {"status": status()}
    report["attempts"] = {name: attempt() for name, attempt in attempts().items()}
    report["controls"] = controls()  # after the attempts: unshare refuses threaded callers
    print(json.dumps(report))
