"""Zygotes: a sandbox's default Python kernel forked from its template's zygote (a Python
process with the kernel's modules imported) must be the same, to everything that runs in
the sandbox, as a kernel the sandbox boots itself.

A create whose variables change how Python starts (`LC_*`, `PYTHON*`, `LANG`) cannot use
the zygote, so such a create gives the cold kernel to compare with. `GET /pools/{template}`
shows the zygote and how many kernels it started.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2b import TimeoutException

from ci_helpers import CodeSandbox, code_sandbox
from conftest import pools_api, set_pools

TEMPLATE = "code-interpreter-v1"

# What the kernel process sees of itself, run inside it.
SELF = r"""
import json, os, resource, socket, sys
def _status():
    keep = ('Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb',
            'NoNewPrivs', 'Seccomp', 'Seccomp_filters', 'SigBlk', 'SigIgn', 'SigCgt')
    out = {}
    with open('/proc/self/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in keep:
                out[k] = v.split()
    return out
def _fds():
    out = []
    # From 3 on: stdout and stderr are pipes to the agent either way, but two of them for a
    # kernel it spawned and one (the plan's FIFO) for a forked one.
    for fd in sorted(os.listdir('/proc/self/fd'), key=int)[3:]:
        try:
            t = os.readlink('/proc/self/fd/' + fd)
        except OSError:
            continue
        if t.startswith('/run/hutch/kernels/') and t.endswith('/kernel.log'):
            t = 'pipe'  # the plan's FIFO shows its path
        # SQLite's own, open for a moment while IPython's history thread writes: its
        # journal, and the directory it syncs after the journal is gone.
        if not t.endswith(('-journal', '/.ipython/profile_default')):
            out.append(t.split(':')[0] if ':' in t else t)
    return out
_old = os.umask(0); os.umask(_old)
with open('/proc/self/cmdline', 'rb') as f:
    _cmd = [a.decode() for a in f.read().split(b'\0') if a]
with open('/proc/self/oom_score_adj') as f:
    _oom = f.read().strip()
with open('/proc/self/cgroup') as f:
    _cgroup = f.read()
print(json.dumps({
    'uid': os.getuid(), 'gid': os.getgid(), 'groups': sorted(os.getgroups()),
    'cwd': os.getcwd(), 'ppid': os.getppid(), 'pid_is_small': os.getpid() < 1000,
    'hostname_len': len(socket.gethostname()), 'umask': _old, 'oom': _oom, 'cgroup': _cgroup,
    'status': _status(), 'fd_kinds': sorted(set(_fds())),
    'env_names': sorted(k for k in os.environ if k not in ('LC_HUTCH_TEST', 'ZYG_VAR')),
    'zyg_var': os.environ.get('ZYG_VAR'),
    'argv0': os.path.basename(sys.argv[0]), 'executable': sys.executable,
    'path0': sys.path[0], 'cmd': [a for a in _cmd if not a.endswith('.json')],
    'rlimits': {n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith('RLIMIT_')},
    'main': __name__, 'sid_is_self': os.getsid(0) == os.getpid(),
}))
"""


def zygote() -> dict[str, Any] | None:
    status, pool = pools_api("GET", f"/{TEMPLATE}")
    assert status == 200, pool
    assert isinstance(pool, dict)
    z = pool.get("zygote")
    assert z is None or isinstance(z, dict)
    return z


def wait_zygote(timeout: float = 120) -> dict[str, Any]:
    """The template's zygote; a create starts one on first use."""
    deadline = time.time() + timeout
    with code_sandbox() as sbx:
        sbx.run_code("1")
    while (z := zygote()) is None:
        assert time.time() < deadline, "no zygote started"
        time.sleep(0.2)
    return z


@pytest.fixture
def no_pool() -> Iterator[None]:
    """Creates start sandboxes instead of claiming pooled ones; sizes restored after."""
    _, pools = pools_api("GET")
    assert isinstance(pools, list)
    saved = {p["templateID"]: (p["min"], p["max"]) for p in pools}
    set_pools({TEMPLATE: (0, 0)})
    try:
        yield
    finally:
        set_pools(saved)


def kernel_facts(sbx: CodeSandbox) -> dict[str, Any]:
    ex = sbx.run_code(SELF)
    assert ex.error is None, ex.error
    facts: dict[str, Any] = json.loads("".join(ex.logs.stdout))
    # The kernel's namespaces against those of a command the sandbox's agent starts.
    kpid = sbx.run_code("import os; os.getpid()").text
    out = sbx.commands.run(
        f"for n in user mnt net ipc uts pid cgroup; do "
        f'[ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/{kpid}/ns/$n)" ] && echo same || echo differs; done',
    ).stdout.split()
    facts["namespaces"] = out
    facts["first"] = sbx.run_code("1 + 1").text
    facts["interrupt_then_run"] = interrupt_then_run(sbx)
    return facts


def interrupt_then_run(sbx: CodeSandbox) -> str | None:
    """A cell that runs past the SDK's timeout is interrupted; the kernel lives on."""
    with pytest.raises(TimeoutException):
        sbx.run_code("import time; time.sleep(30)", timeout=1)
    return sbx.run_code("'alive'").text


@pytest.mark.usefixtures("no_pool")
def test_a_kernel_forked_from_the_zygote_is_the_kernel_a_sandbox_boots() -> None:
    before = wait_zygote()
    tag = uuid.uuid4().hex[:8]
    with code_sandbox(envs={"ZYG_VAR": tag}) as sbx:
        forked = kernel_facts(sbx)
    after = zygote()
    assert after is not None and after["kernels"] == before["kernels"] + 1, (before, after)
    with code_sandbox(envs={"ZYG_VAR": tag, "LC_HUTCH_TEST": "1"}) as sbx:
        cold = kernel_facts(sbx)
    again = zygote()
    assert again is not None and again["kernels"] == after["kernels"], "a cold start used the zygote"
    differing = {k: (forked[k], cold.get(k)) for k in forked if forked[k] != cold.get(k)}
    assert not differing, json.dumps(differing)
    assert forked["zyg_var"] == tag
    assert forked["namespaces"] == ["same"] * 7
    assert forked["ppid"] == 1 and forked["pid_is_small"]
    assert forked["first"] == "2"
    assert forked["interrupt_then_run"] == "alive"
    assert forked["cmd"][1:3] == ["-m", "ipykernel_launcher"], forked["cmd"]
    assert forked["status"]["Seccomp"] == ["2"]


@pytest.mark.usefixtures("no_pool")
def test_kernels_forked_from_one_zygote_share_no_random_state_and_no_variables() -> None:
    wait_zygote()
    seen: list[str] = []
    for _ in range(2):
        with code_sandbox() as sbx:
            out = sbx.run_code(
                "import random, os, tempfile\n"
                "globals().setdefault('leak', 'x')\n"
                "(random.random(), os.urandom(8).hex(), tempfile.mktemp(),"
                " sorted(k for k in globals() if not k.startswith('_')))"
            ).text
            assert out is not None
            seen.append(out)
    assert seen[0] != seen[1]
    a, b = (s.split("[", 1)[1] for s in seen)
    assert a == b, "the kernels' user namespaces differ"


@pytest.mark.usefixtures("no_pool")
def test_a_dead_zygote_is_replaced_and_creates_go_on() -> None:
    z = wait_zygote()
    os.kill(z["pid"], signal.SIGKILL)
    with code_sandbox() as sbx:
        assert sbx.run_code("6 * 7").text == "42"
    deadline = time.time() + 120
    while True:
        with code_sandbox() as sbx:
            assert sbx.run_code("6 * 7").text == "42"
        new = zygote()
        if new is not None and new["pid"] != z["pid"]:
            break
        assert time.time() < deadline, "the zygote was not replaced"
        time.sleep(0.5)
    with code_sandbox() as sbx:
        assert sbx.run_code("6 * 7").text == "42"
    latest = zygote()
    assert latest is not None and latest["kernels"] >= 1
