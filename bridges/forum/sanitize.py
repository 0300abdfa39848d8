"""HTML from users (forum comments both ways, course lessons) through one allowlist: the tags
the Matrix spec suggests clients render, links only to safe schemes."""

from __future__ import annotations

import markdown
import nh3

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


def clean_html(html: str) -> str:
    return nh3.clean(
        html, tags=TAGS, attributes=ATTRIBUTES, url_schemes=SCHEMES, link_rel="noopener noreferrer"
    )


def markdown_to_html(text: str) -> str:
    """Markdown (forum comments, course lessons) to HTML that passed the allowlist."""
    return clean_html(markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"]))
