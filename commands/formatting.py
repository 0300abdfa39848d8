"""HTML for replies and its plain-text fallback."""

from __future__ import annotations

import html
import re

escape = html.escape

_BLOCK_END = re.compile(r"</?(p|ul|ol|h[1-6]|pre|blockquote|tr)>|</li>|<br\s*/?>", re.IGNORECASE)
_LIST_ITEM = re.compile(r"<li[^>]*>", re.IGNORECASE)
_ORDERED = re.compile(r"<ol[^>]*>(.*?)</ol>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r'<a\s[^>]*href="([^"]*)"[^>]*>(.*?)</a>', re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def _numbered(match: re.Match[str]) -> str:
    counter = iter(range(1, 1000))
    return _LIST_ITEM.sub(lambda _: f"\n{next(counter)}. ", match.group(1))


def _link(match: re.Match[str]) -> str:
    href, label = match.group(1), _TAG.sub("", match.group(2))
    return label if html.unescape(href) == html.unescape(label) else f"{label} ({href})"


def html_to_text(markup: str) -> str:
    """A readable plain-text body for clients that do not render formatted_body: numbered lists
    keep their numbers (quiz choices are answered by number), links keep their address."""
    text = _ORDERED.sub(_numbered, markup)
    text = _LINK.sub(_link, text)
    text = _BLOCK_END.sub("\n", text)
    text = _LIST_ITEM.sub("\n• ", text)
    text = _TAG.sub("", text)
    lines = [line.rstrip() for line in html.unescape(text).splitlines()]
    return "\n".join(line for line in lines if line).strip()


def code(text: str) -> str:
    return f"<code>{escape(text)}</code>"
