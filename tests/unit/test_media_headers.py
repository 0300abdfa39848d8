"""Names of uploaded files reach browsers only as RFC 6266 attachment parameters."""

from __future__ import annotations

from bridges.media.api import content_disposition


def test_plain_names_keep_their_name() -> None:
    assert content_disposition("chart.png") == (
        "attachment; filename=\"chart.png\"; filename*=UTF-8''chart.png"
    )


def test_hostile_names_cannot_break_the_header() -> None:
    value = content_disposition('evil"\r\nSet-Cookie: x=1; "é.html')
    assert "\r" not in value and "\n" not in value
    fallback = value.split("filename=")[1].split(";")[0]
    assert fallback.count('"') == 2  # only the quotes around it
    assert "filename*=UTF-8''evil%22%0D%0ASet-Cookie%3A%20x%3D1%3B%20%22%C3%A9.html" in value
