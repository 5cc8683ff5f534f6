"""Volumes with the official SDK (sync and async): persistent storage of a team, with a
size quota, whose content API works without a sandbox and which sandboxes mount
(`volume_mounts={"/mnt/data": vol}`): what one sandbox writes, the next one reads, the
content API sees it with the owners sandboxes see, and nothing in a volume (links to host
paths, `..`) leads the content API outside it."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, AsyncVolume, Sandbox, Volume
from e2b.exceptions import NotFoundException, SandboxException, VolumeException

from conftest import DATA_DIR, WORK

API_URL = os.environ["E2B_API_URL"]
API_KEY = os.environ["E2B_API_KEY"]


def hutch(*args: str) -> str:
    binary = (WORK / "server.cmd").read_text().splitlines()[0]
    out = subprocess.run([binary, *args, "--data-dir", str(DATA_DIR)], capture_output=True, text=True, check=True)
    return out.stdout


@pytest.fixture
def volume() -> Iterator[Volume]:
    vol = Volume.create(f"vol-{uuid.uuid4().hex[:10]}")
    try:
        yield vol
    finally:
        Volume.destroy(vol.volume_id)


def test_a_volume_is_created_listed_found_and_destroyed() -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    vol = Volume.create(name)
    assert vol.name == name and vol.volume_id and vol.token
    info = Volume.get_info(vol.volume_id)
    assert (info.volume_id, info.name, info.token) == (vol.volume_id, name, vol.token)
    assert vol.volume_id in {v.volume_id for v in Volume.list()}
    again = Volume.connect(vol.volume_id)
    assert again.token == vol.token
    # A name is one volume in a team.
    with pytest.raises(VolumeException):
        Volume.create(name)
    assert Volume.destroy(vol.volume_id) is True
    assert Volume.destroy(vol.volume_id) is False
    with pytest.raises(NotFoundException):
        Volume.get_info(vol.volume_id)
    assert vol.volume_id not in {v.volume_id for v in Volume.list()}
    assert not (DATA_DIR / "volumes" / vol.volume_id).exists()


def test_the_content_api_works_without_a_sandbox(volume: Volume) -> None:
    volume.write_file("/hello.txt", "Hello, volume!")
    assert volume.read_file("/hello.txt") == "Hello, volume!"
    assert volume.read_file("/hello.txt", format="bytes") == b"Hello, volume!"
    assert b"".join(volume.read_file("/hello.txt", format="stream")) == b"Hello, volume!"
    info = volume.get_info("/hello.txt")
    assert (info.name, info.path, info.size, info.type.value) == ("hello.txt", "/hello.txt", 14, "file")
    assert (info.uid, info.gid, info.mode) == (1000, 1000, 0o644)

    # Replacing needs no force; force=False refuses.
    volume.write_file("/hello.txt", "again")
    with pytest.raises(VolumeException):
        volume.write_file("/hello.txt", "no", force=False)
    assert volume.read_file("/hello.txt") == "again"

    volume.make_dir("/a/b/c", force=True)
    with pytest.raises(VolumeException):
        volume.make_dir("/a/b/c", force=False)
    with pytest.raises(NotFoundException):
        volume.make_dir("/x/y")
    volume.write_file("/a/b/c/deep.bin", bytes(range(256)), uid=0, gid=0, mode=0o600)
    deep = volume.get_info("/a/b/c/deep.bin")
    assert (deep.uid, deep.gid, deep.mode, deep.size) == (0, 0, 0o600, 256)
    updated = volume.update_metadata("/a/b/c/deep.bin", uid=1001, gid=1002, mode=0o640)
    assert (updated.uid, updated.gid, updated.mode) == (1001, 1002, 0o640)
    with pytest.raises(NotFoundException):
        volume.update_metadata("/nope", mode=0o644)

    names = sorted(e.name for e in volume.list("/"))
    assert names == ["a", "hello.txt"]
    assert [e.path for e in volume.list("/a/b")] == ["/a/b/c"]
    with pytest.raises(NotFoundException):
        volume.list("/missing")
    assert volume.exists("/a/b") and not volume.exists("/nothing")
    volume.remove("/a")
    assert not volume.exists("/a/b/c/deep.bin")
    with pytest.raises(NotFoundException):
        volume.remove("/a")
    with pytest.raises(NotFoundException):
        volume.read_file("/a/b/c/deep.bin")


def test_a_mounted_volume_persists_across_sandboxes_and_owners_match(volume: Volume) -> None:
    writer = Sandbox.create(volume_mounts={"/mnt/data": volume}, timeout=120)
    try:
        writer.files.write("/mnt/data/hello.txt", "written by the writer")
        writer.commands.run("mkdir -p /mnt/data/dir && echo x > /mnt/data/dir/f")
        assert writer.commands.run("stat -c '%U %G' /mnt/data /mnt/data/hello.txt").stdout.split() == [
            "user",
            "user",
            "user",
            "user",
        ]
        assert writer.get_info().sandbox_id == writer.sandbox_id
    finally:
        writer.kill()
    # Written by a sandbox, read by the content API with the same owner.
    assert volume.read_file("/hello.txt") == "written by the writer"
    assert volume.get_info("/dir/f").uid == 1000
    volume.write_file("/from-api.txt", "api", uid=0, gid=0)
    reader = Sandbox.create(volume_mounts={"/data": volume}, timeout=120)
    try:
        assert reader.files.read("/data/hello.txt") == "written by the writer"
        assert reader.commands.run("stat -c %U /data/from-api.txt").stdout.strip() == "root"
        # The volume is the same while two sandboxes mount it.
        other = Sandbox.create(volume_mounts={"/v": volume}, timeout=60)
        try:
            other.files.write("/v/shared.txt", "now")
            assert reader.files.read("/data/shared.txt") == "now"
        finally:
            other.kill()
        # A volume in use cannot be destroyed.
        r = httpx.delete(f"{API_URL}/volumes/{volume.volume_id}", headers={"X-API-Key": API_KEY})
        assert r.status_code == 409, r.text
    finally:
        reader.kill()


def test_the_content_api_never_leaves_the_volume(volume: Volume) -> None:
    outside = Path(f"/tmp/hutch-volume-secret-{uuid.uuid4().hex}")
    outside.write_text("host secret")
    sbx = Sandbox.create(volume_mounts={"/mnt/v": volume}, timeout=60)
    try:
        sbx.commands.run(f"ln -s {outside} /mnt/v/abs && ln -s ../../../../../../etc /mnt/v/up && ln -s / /mnt/v/root")
    finally:
        sbx.kill()
    for path in ("/abs", "/up/hostname", "/root/etc/hostname", "/../../etc/hostname"):
        with pytest.raises((NotFoundException, VolumeException)):
            volume.read_file(path)
    with pytest.raises(VolumeException):
        volume.write_file("/abs", "overwritten")
    with pytest.raises(VolumeException):
        volume.update_metadata("/abs", mode=0o777)
    assert volume.get_info("/abs").type.value == "symlink"
    volume.remove("/root")
    assert outside.read_text() == "host secret"
    assert outside.stat().st_mode & 0o777 != 0o777
    assert Path("/etc/hostname").exists()
    outside.unlink()


def test_a_volume_over_its_quota_refuses_the_write(volume: Volume) -> None:
    size_mb = 64  # scripts/test.sh: --volume-size-mb 64
    sbx = Sandbox.create(volume_mounts={"/big": volume}, timeout=120)
    try:
        out = sbx.commands.run(f"dd if=/dev/zero of=/big/fill bs=1M count={size_mb + 64} 2>&1 || true").stdout
        assert "No space left on device" in out
    finally:
        sbx.kill()
    with pytest.raises(VolumeException, match=r"full"):
        volume.write_file("/more.bin", b"x" * (4 << 20))
    volume.remove("/fill")
    volume.write_file("/more.bin", b"x" * (4 << 20))


def test_bad_volume_input_is_refused_and_changes_nothing(volume: Volume) -> None:
    for name in ("", "a/b", "-x", "x" * 200):
        r = httpx.post(f"{API_URL}/volumes", json={"name": name}, headers={"X-API-Key": API_KEY})
        assert r.status_code == 400, (name, r.text)
    with pytest.raises(SandboxException, match="not found"):
        Sandbox.create(volume_mounts={"/mnt/x": "no-such-volume"})
    for path in ("relative", "/", "/proc/x", "/a/../b"):
        r = httpx.post(
            f"{API_URL}/sandboxes",
            json={"templateID": "base", "volumeMounts": [{"name": volume.name, "path": path}]},
            headers={"X-API-Key": API_KEY},
        )
        assert r.status_code == 400, (path, r.text)
    # The content API wants the volume's token.
    r = httpx.get(f"{API_URL}/volumecontent/{volume.volume_id}/path", params={"path": "/"})
    assert r.status_code == 401
    r = httpx.get(
        f"{API_URL}/volumecontent/{volume.volume_id}/path",
        params={"path": "/"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert r.status_code == 401
    with pytest.raises(VolumeException):
        volume.update_metadata("/", uid=70000)
    assert volume.list("/") == []


def test_another_teams_volumes_are_out_of_reach(volume: Volume) -> None:
    team = f"volteam{uuid.uuid4().hex[:6]}"
    hutch("teams", "create", team)
    key = hutch("keys", "create", "--name", team, "--team", team).strip().splitlines()[-1]
    try:
        assert Volume.list(api_key=key) == []
        with pytest.raises(NotFoundException):
            Volume.get_info(volume.volume_id, api_key=key)
        assert Volume.destroy(volume.volume_id, api_key=key) is False
        with pytest.raises(SandboxException, match="not found"):
            Sandbox.create(volume_mounts={"/mnt/x": volume.name}, api_key=key)
        # The same name in another team is another volume.
        theirs = Volume.create(volume.name, api_key=key)
        assert theirs.volume_id != volume.volume_id
        Volume.destroy(theirs.volume_id, api_key=key)
    finally:
        hutch("keys", "revoke", key)


@pytest.mark.asyncio
async def test_async_volume_and_mount() -> None:
    vol = await AsyncVolume.create(f"async-{uuid.uuid4().hex[:8]}")
    try:
        await vol.write_file("/a.txt", "async")
        sbx = await AsyncSandbox.create(volume_mounts={"/mnt/data": vol}, timeout=60)
        try:
            assert await sbx.files.read("/mnt/data/a.txt") == "async"
            await sbx.files.write("/mnt/data/b.txt", "back")
        finally:
            await sbx.kill()
        assert await vol.read_file("/b.txt") == "back"
        assert sorted(e.name for e in await vol.list("/")) == ["a.txt", "b.txt"]
    finally:
        assert await AsyncVolume.destroy(vol.volume_id) is True
