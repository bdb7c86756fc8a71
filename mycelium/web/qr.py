"""QR codes as inline SVG (segno): invite codes and pairing links, no image files, no script.

Inline SVG markup passes the strict Content-Security-Policy (it is neither script nor an
inline style) and scales crisply on any screen.
"""

from __future__ import annotations

import logging

import segno
from markupsafe import Markup

log = logging.getLogger("mycelium.web")


def svg(text: str, *, scale: int = 4) -> Markup | None:
    """``text`` as an SVG QR code, or None if it is too long for any QR code (the page
    then shows the text alone).

    Error correction M for short texts (links), L for long ones (invites carry the space's
    control log and reach a few KB). Hidden from screen readers: the page wraps it in an
    element with role="img" and a label, and shows the same text beside it."""
    level = "m" if len(text) < 1000 else "l"
    try:
        code = segno.make(text, error=level, micro=False, boost_error=False)
    except segno.DataOverflowError:
        log.info("web: %d characters do not fit in a QR code; showing the text only",
                 len(text))
        return None
    if code.version is not None and int(code.version) > 25:
        scale = min(scale, 3)
    markup = code.svg_inline(scale=scale, dark="#000", light="#fff", svgclass="qr",
                             lineclass=None, omitsize=False)
    return Markup(markup.replace("<svg ", "<svg aria-hidden=\"true\" focusable=\"false\" ", 1))
