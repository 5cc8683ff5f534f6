"""Sandboxes on gVisor (`hutch serve --runtime gvisor`, docs/security.md "gVisor").

Run when the server under test runs its sandboxes on gVisor: scripts/test.sh's gVisor
stage (CI), or the whole suite with `HUTCH_TEST_RUNTIME=gvisor scripts/test.sh`. Each test
checks what a user of the official SDK sees, and that the sandbox's programs meet gVisor's
kernel, not the host's.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest
from e2b import ALL_TRAFFIC, CommandExitException, Sandbox, SandboxException, Volume

from ci_helpers import code_sandbox
from conftest import diff_resources, host_pid_of, host_resources
from fakenet import FakeInternetHost, answer, curl, datagrams, resolve
from sdk_helpers import SANDBOX_URL, plain_client, wait_for_port_cmd

pytestmark = pytest.mark.skipif(
    os.environ.get("HUTCH_TEST_RUNTIME") != "gvisor", reason="the server under test runs sandboxes natively"
)


def test_programs_in_the_sandbox_meet_gvisors_kernel(sandbox: Sandbox) -> None:
    log = sandbox.commands.run("dmesg").stdout
    assert "Starting gVisor" in log
    # The host's kernel is not what uname reports, and its modules are not listed.
    assert sandbox.commands.run("uname -r").stdout.strip() != os.uname().release
    assert sandbox.commands.run("cat /proc/modules 2>/dev/null; true", user="root").stdout == ""
    # On the host, the sandbox's init is gVisor's runsc, not the agent.
    cmdline = Path(f"/proc/{host_pid_of(sandbox)}/cmdline").read_bytes().split(b"\0")
    assert any(arg.endswith(b"runsc") for arg in cmdline[:1]), cmdline


def test_commands_run_as_the_user_with_the_sandboxs_identity() -> None:
    sbx = Sandbox.create(timeout=120, envs={"GREETING": "from-create"}, metadata={"who": "gvisor-test"})
    try:
        r = sbx.commands.run("id -un; pwd; hostname; echo $GREETING")
        assert r.stdout.split() == ["user", "/home/user", sbx.sandbox_id, "from-create"]
        assert sbx.commands.run("id -u", user="root").stdout.strip() == "0"
        # gVisor always sets no_new_privs, so setuid programs do not raise privileges: sudo
        # says why instead of failing silently.
        with pytest.raises(CommandExitException) as e:
            sbx.commands.run("sudo -n id -un")
        assert "no new privileges" in e.value.stderr
        with pytest.raises(CommandExitException) as e:
            sbx.commands.run("echo oops >&2; exit 7")
        assert e.value.exit_code == 7
        assert "oops" in e.value.stderr
        assert Sandbox.get_info(sbx.sandbox_id).metadata == {"who": "gvisor-test"}
    finally:
        sbx.kill()


def test_files_through_the_api_belong_to_the_user_and_match_what_commands_see(sandbox: Sandbox) -> None:
    sandbox.files.write("/home/user/notes/a.txt", "hello gvisor")
    assert sandbox.files.read("/home/user/notes/a.txt") == "hello gvisor"
    listing = sandbox.commands.run("ls -ln /home/user/notes; stat -c %U /home/user/notes/a.txt").stdout
    assert " 1000 1000 " in listing
    assert listing.split()[-1] == "user"
    # Larger than the size the server would take a native sandbox's file descriptor for.
    data = os.urandom(3 * 1024 * 1024)
    sandbox.files.write("/home/user/blob.bin", data)
    digest = sandbox.commands.run("sha256sum /home/user/blob.bin").stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()
    assert sandbox.files.read("/home/user/blob.bin", format="bytes") == data
    # /tmp is on the sandbox's disk, as in a native sandbox: a move there is a rename.
    sandbox.files.rename("/home/user/notes", "/tmp/moved-notes")
    assert sandbox.files.read("/tmp/moved-notes/a.txt") == "hello gvisor"
    assert sandbox.commands.run("stat -f -c %T /tmp").stdout.strip() != "tmpfs"
    sandbox.files.remove("/tmp/moved-notes")
    assert not sandbox.files.exists("/tmp/moved-notes/a.txt")


def test_the_agents_secrets_are_neither_in_its_environment_nor_behind_a_closed_directory(sandbox: Sandbox) -> None:
    """gVisor's /proc lets anyone inside read the agent's environment, which held its
    configuration and access token: the agent zeroes those strings before it serves. And
    gVisor's inotify does not check read permission, so the agent does before it watches."""
    token = sandbox._envd_access_token
    assert token
    shown = sandbox.commands.run("tr '\\0' '\\n' < /proc/1/environ").stdout
    assert "HUTCH_AGENT_CONFIG" not in shown and token not in shown
    sandbox.commands.run("mkdir -p /srv/closed && chmod 700 /srv/closed", user="root")
    with pytest.raises(SandboxException) as err:
        sandbox.files.watch_dir("/srv/closed")
    assert "permission" in str(err.value).lower()
    sandbox.files.watch_dir("/srv/closed", user="root").stop()


def test_a_server_inside_is_reached_through_the_router_also_on_loopback(sandbox: Sandbox) -> None:
    marker = uuid.uuid4().hex
    sandbox.commands.run(f"mkdir -p /tmp/www && echo {marker} > /tmp/www/m.txt")
    for port, bind in ((8000, "0.0.0.0"), (8001, "127.0.0.1")):
        sandbox.commands.run(f"python3 -m http.server {port} --bind {bind}", background=True, cwd="/tmp/www")
        sandbox.commands.run(wait_for_port_cmd(port))
        with plain_client() as c:
            r = c.get(f"{SANDBOX_URL}/m.txt", headers={"Host": sandbox.get_host(port)})
        assert r.status_code == 200, (port, r.text)
        assert r.text == f"{marker}\n"


@pytest.mark.usefixtures("pools_off")
def test_pause_resume_and_kill_leave_nothing_behind() -> None:
    before = host_resources()
    sbx = Sandbox.create(timeout=120)
    sbx.files.write("/home/user/kept.txt", "still here")
    sbx.pause()
    resumed = Sandbox.connect(sbx.sandbox_id)
    assert resumed.commands.run("cat /home/user/kept.txt").stdout == "still here"
    sbx.kill()
    deadline = time.time() + 30
    after = host_resources()
    while after != before and time.time() < deadline:
        time.sleep(0.5)
        after = host_resources()
    assert after == before, diff_resources(before, after)


def test_the_code_interpreter_runs_code_on_gvisor() -> None:
    with code_sandbox() as sbx:
        first = sbx.run_code("x = 40 + 2\nx")
        assert first.error is None, first.error
        assert first.text == "42"
        again = sbx.run_code("import platform; print(x, platform.release())")
        assert again.logs.stdout[0].split()[0] == "42"
        assert again.logs.stdout[0].split()[1] != os.uname().release


def test_snapshots_forks_filesystem_pauses_and_volumes_work_on_gvisor() -> None:
    vol = Volume.create(f"gv-{uuid.uuid4().hex[:8]}")
    vol.write_file("/from-api.txt", "api")
    sbx = Sandbox.create(volume_mounts={"/mnt/v": vol}, timeout=120)
    try:
        sbx.files.write("/home/user/mark.txt", "on gvisor")
        assert sbx.files.read("/mnt/v/from-api.txt") == "api"
        sbx.files.write("/mnt/v/from-sandbox.txt", "sandbox")
        assert vol.read_file("/from-sandbox.txt") == "sandbox"
        assert vol.get_info("/from-sandbox.txt").uid == 1000

        snap = sbx.create_snapshot()
        try:
            from_snap = Sandbox.create(snap.snapshot_id, timeout=60)
            assert from_snap.files.read("/home/user/mark.txt") == "on gvisor"
            from_snap.kill()
        finally:
            Sandbox.delete_snapshot(snap.snapshot_id)
        fork = sbx.fork(count=1, timeout=60)[0]
        assert isinstance(fork, Sandbox)
        assert fork.files.read("/home/user/mark.txt") == "on gvisor"
        assert fork.files.read("/mnt/v/from-api.txt") == "api"
        fork.kill()

        assert sbx.pause(mode="filesystem") is True
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.files.read("/home/user/mark.txt") == "on gvisor"
        assert again.files.read("/mnt/v/from-sandbox.txt") == "sandbox"
    finally:
        sbx.kill()
        Volume.destroy(vol.volume_id)


def test_an_egress_policy_and_its_header_rules_hold_on_gvisor() -> None:
    with (
        FakeInternetHost("gv-allowed", ["gv-allowed.test"]) as allowed,
        FakeInternetHost("gv-denied", ["gv-denied.test"]) as denied,
    ):
        sbx = Sandbox.create(
            timeout=120,
            network={
                "allow_out": ["gv-allowed.test"],
                "deny_out": [ALL_TRAFFIC],
                "rules": {"gv-allowed.test": [{"transform": {"headers": {"X-Injected": "on-gvisor"}}}]},
            },
        )
        try:
            # HTTPS through the proxy's interception: the CA is in the gVisor sandbox's bundle.
            got = answer(
                *curl(sbx, allowed.url("https", "gv-allowed.test"), *resolve("gv-allowed.test", 443, allowed.ip))
            )
            assert got["host"] == "gv-allowed" and got["headers"]["x-injected"] == "on-gvisor", got
            rc, body = curl(sbx, denied.url())
            assert rc != 0, body
            assert not datagrams(sbx, denied.ip).udp_echoed
        finally:
            sbx.kill()
