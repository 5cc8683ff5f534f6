"""Escapes through namespaces, mounts and the kernel's less common interfaces, tried as root
inside a sandbox (and as its user where that is the attacker): new namespaces, entering
others, mounting, the new mount API, keyrings, io_uring, userfaultfd, file handles, reading
another process's memory, the kernel log and the classic chroot escape. Each must fail
inside; where it would show on the host, that is checked too. (The agent's own secrets:
test_kernel_surface.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

from e2b import Sandbox

from conftest import DATA_DIR, SYSCALL_PRELUDE, host_pid_of, python

SYSCALLS = (
    SYSCALL_PRELUDE
    + """
def s(text):
    b = ctypes.create_string_buffer(text.encode())
    KEEP.append(b)
    return ctypes.addressof(b)
KEEP = []
os.makedirs("/tmp/m", exist_ok=True)
mnt_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x00020000, 0x40000000, 0x20000000
got = {
    "unshare(user)": call(272, CLONE_NEWUSER),
    "unshare(mount)": call(272, CLONE_NEWNS),
    "unshare(net)": call(272, CLONE_NEWNET),
    "unshare(pid)": call(272, CLONE_NEWPID),
    "setns(mnt)": call(308, mnt_ns, 0),
    "mount(tmpfs)": call(165, s("none"), s("/tmp/m"), s("tmpfs"), 0, 0),
    "mount(proc)": call(165, s("proc"), s("/tmp/m"), s("proc"), 0, 0),
    "mount(bind /)": call(165, s("/"), s("/tmp/m"), 0, 0x1000, 0),
    "mount(remount /)": call(165, 0, s("/"), 0, 0x20, 0),
    "umount2(/proc)": call(166, s("/proc"), 2),
    "pivot_root": call(155, s("/tmp"), s("/tmp/m")),
    "open_tree": call(428, -100, s("/"), 1),
    "fsopen(tmpfs)": call(430, s("tmpfs"), 0),
    "fspick": call(433, -100, s("/"), 0),
    "mount_setattr": call(442, -100, s("/"), 0, addr, 32),
    "add_key": call(248, s("user"), s("k"), addr, 4, -2),
    "keyctl(join)": call(250, 1, 0),
    "request_key": call(249, s("user"), s("k"), 0, -2),
    "io_uring_setup": call(425, 8, addr),
    "userfaultfd": call(323, 0),
    "name_to_handle_at": call(303, -100, s("/etc/hostname"), addr, addr + 2048, 0),
    "open_by_handle_at": call(304, -100, addr, 0),
    "process_vm_readv(pid 1)": call(310, 1, addr, 1, addr + 2048, 1, 0),
    "syslog(read all)": call(103, 3, addr, 4096),
    "lookup_dcookie": call(212, 0, addr, 64),
    "quotactl": call(179, 0, s("/"), 0, addr),
    "nfsservctl": call(180, 0, 0, 0),
    "vhangup": call(153),
    "iopl": call(172, 3),
    "ioperm": call(173, 0, 1024, 1),
}
print(json.dumps(got))
"""
)


def test_namespaces_mounts_keyrings_io_uring_and_file_handles_are_refused_as_root(sandbox: Sandbox) -> None:
    pid = host_pid_of(sandbox)
    mounts_before = Path(f"/proc/{pid}/mountinfo").read_text()
    got = json.loads(python(sandbox, SYSCALLS, user="root"))
    allowed = {name: outcome for name, outcome in got.items() if outcome not in ("EPERM", "EACCES", "ENOSYS")}
    assert not allowed, allowed
    # Nothing was mounted or unmounted in the sandbox's mount namespace.
    assert Path(f"/proc/{pid}/mountinfo").read_text() == mounts_before


def test_the_tools_that_make_namespaces_fail_too(sandbox: Sandbox) -> None:
    for cmd in [
        "unshare -Ur true",
        "unshare -m true",
        "unshare -n true",
        "nsenter -t 1 -m -u -i -n -p true",
        "mount -t tmpfs none /mnt",
        "umount /proc",
    ]:
        r = sandbox.commands.run(cmd + " 2>&1; echo rc=$?", user="root")
        assert not r.stdout.rstrip().endswith("rc=0"), (cmd, r.stdout)


def test_the_kernel_log_is_not_readable(sandbox: Sandbox) -> None:
    out = python(
        sandbox,
        """
import json, os, subprocess
got = {}
try:
    with open("/dev/kmsg", "rb") as f:
        got["kmsg"] = "read %d bytes" % len(f.read(256))
except OSError as e:
    got["kmsg"] = e.strerror
r = subprocess.run(["dmesg"], capture_output=True, text=True)
got["dmesg"] = "read" if r.returncode == 0 and r.stdout.strip() else "refused"
print(json.dumps(got))
""",
        user="root",
    )
    got = json.loads(out)
    assert got["dmesg"] == "refused", got
    assert not got["kmsg"].startswith("read"), got


def test_a_chroot_escape_ends_at_the_sandboxs_own_root(sandbox: Sandbox) -> None:
    # The classic escape: chroot into a subdirectory while holding a descriptor outside it,
    # fchdir out and walk up, then chroot to where the walk ends.
    script = """
import json, os, sys
os.makedirs("/tmp/jail", exist_ok=True)
outside = os.open("/", os.O_RDONLY)
os.chroot("/tmp/jail")
os.fchdir(outside)
for _ in range(64):
    os.chdir("..")
os.chroot(".")
print(json.dumps({"root": sorted(os.listdir("/")), "data": os.path.exists(sys.argv[1])}))
"""
    sandbox.files.write("/tmp/escape.py", script, user="root")
    out = sandbox.commands.run(f"python3 /tmp/escape.py {DATA_DIR}", user="root", timeout=30).stdout
    got = json.loads(out)
    # Where the walk ended is the sandbox's root: its home is there, the host's data is not.
    assert "home" in got["root"], got
    assert got["data"] is False, got
