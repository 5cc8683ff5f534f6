"""Attacks through the files API: a file from a sandbox must never become a document of the
origin that serves hutch's API (HTML or SVG run there would be cross-site scripting against
everyone who holds a key for it).
"""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import Sandbox, SandboxException

PAGES = {
    "/home/user/x.html": "<html><script>fetch('/sandboxes').then(r => r.text()).then(alert)</script></html>",
    "/home/user/x.svg": '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>',
    "/home/user/x.txt": "<script>alert(1)</script>",
}


def test_signed_downloads_are_never_rendered_as_pages_of_the_api_origin(sandbox: Sandbox) -> None:
    for path, page in PAGES.items():
        sandbox.files.write(path, page)
        with httpx.Client(timeout=30, trust_env=False) as c:
            r = c.get(sandbox.download_url(path))
        assert r.status_code == 200 and r.text == page
        assert r.headers["content-disposition"].startswith("attachment;"), r.headers
        assert r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert "sandbox" in csp and "default-src 'none'" in csp, csp


def test_the_files_api_acts_with_the_users_permissions_not_roots(sandbox: Sandbox) -> None:
    # Root's files, and a link the user plants in its home pointing at one of them.
    sandbox.commands.run(
        "mkdir -p /etc/hutch-attack && echo 'root only' > /etc/hutch-attack/secret "
        "&& chmod 600 /etc/hutch-attack/secret",
        user="root",
    )
    sandbox.commands.run("ln -s /etc/hutch-attack/secret /home/user/innocent", user="user")
    try:
        # Writing through the link, or into root's directories, is refused for the user.
        for path in ("/home/user/innocent", "/etc/hutch-attack/planted", "/etc/sudoers.d/planted"):
            with pytest.raises(SandboxException):
                sandbox.files.write(path, "user ALL=(ALL) NOPASSWD: ALL\n", user="user")
        with pytest.raises(SandboxException):
            sandbox.files.read("/home/user/innocent", user="user")
        with pytest.raises(SandboxException):
            sandbox.files.remove("/etc/hutch-attack/secret", user="user")
        with pytest.raises(SandboxException):
            sandbox.files.make_dir("/etc/hutch-attack/dir", user="user")
        check = sandbox.commands.run(
            "cat /etc/hutch-attack/secret; stat -c %U /etc/hutch-attack/secret; ls /etc/hutch-attack /etc/sudoers.d",
            user="root",
        ).stdout
        assert check.split("\n")[:2] == ["root only", "root"], check
        assert "planted" not in check and "dir" not in check.split("\n", 2)[2], check
        # What the user creates is the user's; root keeps root's reach.
        sandbox.files.write("/home/user/mine.txt", "ok", user="user")
        assert sandbox.commands.run("stat -c %U /home/user/mine.txt").stdout.strip() == "user"
        assert sandbox.files.read("/etc/hutch-attack/secret", user="root") == "root only\n"
    finally:
        sandbox.commands.run("rm -rf /etc/hutch-attack /home/user/innocent /home/user/mine.txt", user="root")


def test_directory_watches_see_only_what_their_user_may_list(sandbox: Sandbox) -> None:
    # A root-only directory: its names are no business of the user's.
    sandbox.commands.run("mkdir -p /srv/closed/inner && chmod 700 /srv/closed", user="root")
    try:
        with pytest.raises(SandboxException) as err:
            sandbox.files.watch_dir("/srv/closed", user="user")
        assert "permission" in str(err.value).lower(), err.value
        # A recursive watch of a tree holding it starts, and reports nothing from inside it.
        handle = sandbox.files.watch_dir("/srv", user="user", recursive=True)
        try:
            sandbox.commands.run("touch /srv/closed/inner/secret-name /srv/open-name", user="root")
            names: list[str] = []
            for _ in range(20):
                names += [e.name for e in handle.get_new_events()]
                if any("open-name" in n for n in names):
                    break
                time.sleep(0.1)
        finally:
            handle.stop()
        assert any("open-name" in n for n in names), names
        assert not any("secret-name" in n for n in names), names
        # Root still watches it.
        sandbox.files.watch_dir("/srv/closed", user="root").stop()
    finally:
        sandbox.commands.run("rm -rf /srv/closed /srv/open-name", user="root")
