"""HTML for replies and its plain-text fallback."""

from __future__ import annotations

import html
import re

escape = html.escape

_BLOCK_END = re.compile(r"</?(p|ul|ol|h[1-6]|pre|blockquote|tr)>|</li>|<br\s*/?>", re.IGNORECASE)
_LIST_ITEM = re.compile(r"<li[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def html_to_text(markup: str) -> str:
    """A readable plain-text body for clients that do not render formatted_body."""
    text = _BLOCK_END.sub("\n", markup)
    text = _LIST_ITEM.sub("\n• ", text)
    text = _TAG.sub("", text)
    lines = [line.rstrip() for line in html.unescape(text).splitlines()]
    return "\n".join(line for line in lines if line).strip()


def code(text: str) -> str:
    return f"<code>{escape(text)}</code>"
