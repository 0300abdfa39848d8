"""What a file really is, from its first bytes (the declared mimetype is only a claim)."""

from __future__ import annotations

SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"OggS", 0, "audio/ogg"),
    (b"ID3", 0, "audio/mpeg"),
    (b"fLaC", 0, "audio/flac"),
    (b"ftyp", 4, "video/mp4"),
    (b"\x1a\x45\xdf\xa3", 0, "video/webm"),
    (b"WAVE", 8, "audio/wav"),
)


def sniff(data: bytes) -> str:
    for magic, offset, mime in SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return mime
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the boundary is still text.
        try:
            head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "application/octet-stream"
    if b"\x00" in head:
        return "application/octet-stream"
    return "text/plain"


def agrees(declared: str | None, detected: str) -> bool:
    """Whether the declared type is plausible for what the bytes are."""
    if not declared:
        return True
    declared = declared.split(";")[0].strip().lower()
    if declared == detected:
        return True
    if detected == "text/plain":
        return declared.startswith("text/") or declared in {
            "application/json",
            "application/yaml",
            "application/x-yaml",
            "application/xml",
        }
    if detected == "application/zip":  # docx, odt, epub, jar ... are zip files
        return declared.startswith("application/")
    if detected == "application/octet-stream":
        return declared.startswith("application/")
    return declared.split("/")[0] == detected.split("/")[0]
