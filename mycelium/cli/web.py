"""``mycelium open``: sign in to the running node's web app (DESIGN.md §10).

The node mints a one-time login link (``node.ops`` ``web_login_link``, through the
control API); ``open`` hands it to the system's browser, ``open --json`` prints
``{"url": …}`` for scripts. The link works once and expires after ten minutes.
"""

from __future__ import annotations

import typer

from mycelium.cli.common import HomeOption, JsonOption, emit, fail, node_paths, user_errors


def register(app: typer.Typer) -> None:
    app.command("open")(open_app)


@user_errors
def open_app(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Open the web app in the browser, signed in (the node must be running)."""
    from mycelium.node.client import running_node

    ops = running_node(node_paths(home))
    if ops is None:
        fail("no node is running here: start it with `mycelium run`, then `mycelium open`")
    url = ops.call("web_login_link")["url"]
    if as_json:
        emit({"url": url}, True)
        return
    import webbrowser

    opened = False
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    emit({"url": url}, False, url if opened else f"open this link in your browser:\n{url}")
