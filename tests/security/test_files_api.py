"""Attacks through the files API: a file from a sandbox must never become a document of the
origin that serves hutch's API (HTML or SVG run there would be cross-site scripting against
everyone who holds a key for it).
"""

from __future__ import annotations

import httpx
from e2b import Sandbox

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
