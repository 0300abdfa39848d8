"""HTML in and out: escaping for replies, one allowlist for user HTML (forum comments both ways,
course lessons: the tags the Matrix spec suggests clients render, links only to safe schemes), and
the plain-text fallback of formatted bodies."""

from __future__ import annotations

import html
import re

import markdown
import nh3

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


TAGS = {
    "a",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "del",
    "details",
    "div",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "span",
    "strike",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ATTRIBUTES = {"a": {"href"}, "code": {"class"}, "ol": {"start"}}
SCHEMES = {"https", "http", "ftp", "mailto", "magnet", "matrix", "mxc"}


def clean_html(markup: str) -> str:
    return nh3.clean(
        markup,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=SCHEMES,
        link_rel="noopener noreferrer",
    )


def markdown_to_html(text: str) -> str:
    """Markdown (forum comments, course lessons) to HTML that passed the allowlist."""
    return clean_html(markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"]))
