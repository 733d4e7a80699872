"""``notarium console``: a local web console over the verifying client.

It sits above the client (it imports ``notarium.client``, ``notarium.verify``, ``notarium.host``
for ``--host-dir``, ``errors`` and ``types``); only the command line imports it. Pages are rendered
on the server (Jinja2, autoescaped); the user's key stays in this process and never reaches the
browser. See docs/design/console.md.
"""
