"""Course materials on IPFS: pinned at import, delivered into the room as files.

Materials of badge-gated courses (courses with prerequisites) are encrypted with AES-256-GCM before
they are added to IPFS, because CIDs are public and anyone with a CID can fetch the bytes. Each
material has its own random key, kept only in the territory's PostgreSQL schema
(``course_materials.key``); IPFS holds the ciphertext (nonce + ciphertext + tag). Delivery decrypts
and uploads the file once to the homeserver's media repository; the mxc:// URI is reused for every
later delivery of the same CID.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mautrix.types import (
    ContentURI,
    EventType,
    FileInfo,
    MediaMessageEventContent,
    MessageType,
    RoomID,
)

from appservice.matrix import MatrixConnection
from bridges.media.ipfs_client import IpfsClient
from bridges.media.sniff import sniff
from commands.errors import CommandError
from db.database import Database
from db.territory import TerritoryCode, territory_schema

CID = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,})$")
MAX_MATERIAL_BYTES = 50 * 1024 * 1024
NONCE = 12


class MaterialError(CommandError):
    """A material cannot be stored or delivered; the message says which and why."""


@dataclass(frozen=True)
class Material:
    name: str
    cid: str
    mime: str
    size: int
    key: bytes | None


def encrypt(data: bytes, key: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, None)


def decrypt(blob: bytes, key: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], None)


class MaterialStore:
    def __init__(self, db: Database, territory: TerritoryCode, ipfs: IpfsClient) -> None:
        self.db = db
        self.schema = territory_schema(territory)
        self.ipfs = ipfs

    async def pin(self, reference: str, *, base_dir: Path | None, encrypted: bool) -> Material:
        """Add a material (a path relative to the course file, or a CID) to IPFS and pin it."""
        if CID.match(reference):
            if encrypted:
                raise MaterialError(
                    f"{reference}: a badge-gated course cannot use a public CID as material; "
                    "give the file's path so it can be encrypted."
                )
            data = await self.ipfs.cat(reference, timeout=30)
            await self.ipfs.add(data)  # pins it here too
            return Material(reference, reference, sniff(data), len(data), None)
        if base_dir is None:
            raise MaterialError(
                f"{reference}: materials given by path need `unityplan course import FILE` on the "
                "server; in Matrix, give their CIDs."
            )
        path = (base_dir / reference).resolve()
        if not path.is_relative_to(base_dir.resolve()) or not path.is_file():
            raise MaterialError(f"{reference}: no such file next to the course file.")
        data = path.read_bytes()
        if len(data) > MAX_MATERIAL_BYTES:
            raise MaterialError(f"{reference}: larger than {MAX_MATERIAL_BYTES // 2**20} MB.")
        key = AESGCM.generate_key(bit_length=256) if encrypted else None
        cid = await self.ipfs.add(encrypt(data, key) if key else data)
        return Material(path.name, cid, sniff(data), len(data), key)

    async def record(self, course_id: int, lesson: int, materials: list[Material]) -> None:
        async with self.db.transaction() as conn:
            for position, m in enumerate(materials, start=1):
                await conn.execute(
                    f"""INSERT INTO {self.schema}.course_materials
                            (course_id, lesson, position, name, cid, mime, size, key)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                    course_id,
                    lesson,
                    position,
                    m.name,
                    m.cid,
                    m.mime,
                    m.size,
                    m.key,
                )

    async def of_lesson(self, course_id: int, lesson: int) -> list[Material]:
        rows = await self.db.fetch(
            f"""SELECT name, cid, mime, size, key FROM {self.schema}.course_materials
                WHERE course_id = $1 AND lesson = $2 ORDER BY position""",
            course_id,
            lesson,
        )
        return [Material(r["name"], r["cid"], r["mime"], r["size"], r["key"]) for r in rows]

    async def deliver(self, matrix: MatrixConnection, room_id: str, material: Material) -> None:
        """Send the material into the room as a file (uploaded to the homeserver once per CID)."""
        cache = f"{self.schema}.media_objects"
        mxc = await self.db.fetchval(f"SELECT mxc_url FROM {cache} WHERE cid = $1", material.cid)
        if mxc is None:
            blob = await self.ipfs.cat(material.cid, timeout=60)
            data = decrypt(blob, material.key) if material.key else blob
            mxc = await matrix.bot.upload_media(
                data, mime_type=material.mime, filename=material.name
            )
            await self.db.execute(
                f"""INSERT INTO {cache} (cid, size, mime, encrypted, mxc_url)
                    VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (cid) DO UPDATE SET mxc_url = EXCLUDED.mxc_url""",
                material.cid,
                material.size,
                material.mime,
                material.key is not None,
                mxc,
            )
        msgtype = MessageType.IMAGE if material.mime.startswith("image/") else MessageType.FILE
        await matrix.bot.send_message_event(
            RoomID(room_id),
            EventType.ROOM_MESSAGE,
            MediaMessageEventContent(
                msgtype=msgtype,
                body=material.name,
                url=ContentURI(mxc),
                info=FileInfo(mimetype=material.mime, size=material.size),
            ),
        )
