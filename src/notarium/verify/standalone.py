"""The standalone receipt verifier: one self-contained HTML page (``verifier.html`` beside this file).

It verifies an ACL JSON receipt against a service certificate entirely in the browser (WebCrypto,
and its own small DER reader and ECDSA over the root), opens from disk, and is served
unauthenticated by ``notarium serve`` at ``/verify`` and by the console. Its one inline script and
one inline style are allowed by their SHA-256 hashes: the page carries that policy itself (a
``<meta>`` element, so it holds when opened from disk) and servers send it as a header too, with
``connect-src 'none'``: no request can leave the page.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

PAGE = Path(__file__).with_name("verifier.html")
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
_META = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def policy(html: str) -> str:
    """The Content-Security-Policy that allows exactly the page's inline script and style."""
    scripts = [_hash(body) for kind, body in _INLINE.findall(html) if kind == "script"]
    styles = [_hash(body) for kind, body in _INLINE.findall(html) if kind == "style"]
    return (
        f"default-src 'none'; script-src {' '.join(scripts)}; style-src {' '.join(styles)}; img-src data:; "
        "connect-src 'none'; form-action 'none'; base-uri 'none'"
    )


def embedded_policy(html: str) -> str | None:
    m = _META.search(html)
    return m.group(1) if m else None


@cache
def page() -> bytes:
    return PAGE.read_bytes()


@cache
def header_policy() -> str:
    """The policy as a response header (``frame-ancestors`` works only there)."""
    return policy(page().decode()) + "; frame-ancestors 'none'"


def refresh(path: Path = PAGE) -> bool:
    """Write the page's own policy into its ``<meta>`` element (after the script or style changed)."""
    html = path.read_text()
    current = embedded_policy(html)
    wanted = policy(html)
    if current == wanted:
        return False
    path.write_text(_META.sub(f'<meta http-equiv="Content-Security-Policy" content="{wanted}">', html, count=1))
    return True


if __name__ == "__main__":
    print("updated" if refresh() else "up to date", PAGE)
