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
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mautrix.types import (
    EventType,
    MessageType,
)

from core.effects import Effects, PermanentFailure
from core.errors import NotFound, Refused, TooLarge
from core.matrix import DirectMessenger, MatrixConnection
from core.ports import ContentStore
from core.sniff import sniff
from db.repositories.effects import EffectRow
from db.repositories.media import Material, MediaRepository

CID = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58,})$")
MAX_MATERIAL_BYTES = 50 * 1024 * 1024
NONCE = 12


def encrypt(data: bytes, key: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, None)


def decrypt(blob: bytes, key: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], None)


DELIVERY = "course.material"


class MaterialStore:
    def __init__(
        self,
        media: MediaRepository,
        ipfs: ContentStore,
        matrix: MatrixConnection | None = None,
        messenger: DirectMessenger | None = None,
    ) -> None:
        self.media = media
        self.ipfs = ipfs
        self._matrix = matrix  # for delivery (the appservice); the CLI only pins
        self._messenger = messenger

    @property
    def messenger(self) -> DirectMessenger:
        if self._messenger is None:
            raise RuntimeError("materials are delivered by the appservice only")
        return self._messenger

    @property
    def matrix(self) -> MatrixConnection:
        if self._matrix is None:
            raise RuntimeError("materials are delivered by the appservice only")
        return self._matrix

    async def pin(self, reference: str, *, base_dir: Path | None, encrypted: bool) -> Material:
        """Add a material (a path relative to the course file, or a CID) to IPFS and pin it."""
        if CID.match(reference):
            if encrypted:
                raise Refused(
                    f"{reference}: a badge-gated course cannot use a public CID as material; "
                    "give the file's path so it can be encrypted."
                )
            data = await self.ipfs.cat(reference, timeout=30)
            await self.ipfs.add(data)  # pins it here too
            return Material(reference, reference, sniff(data), len(data), None)
        if base_dir is None:
            raise Refused(
                f"{reference}: materials given by path need `unityplan course import FILE` on the "
                "server; in Matrix, give their CIDs."
            )
        path = (base_dir / reference).resolve()
        if not path.is_relative_to(base_dir.resolve()) or not path.is_file():
            raise NotFound(f"{reference}: no such file next to the course file.")
        data = path.read_bytes()
        if len(data) > MAX_MATERIAL_BYTES:
            raise TooLarge(f"{reference}: larger than {MAX_MATERIAL_BYTES // 2**20} MB.")
        key = AESGCM.generate_key(bit_length=256) if encrypted else None
        cid = await self.ipfs.add(encrypt(data, key) if key else data)
        return Material(path.name, cid, sniff(data), len(data), key)

    async def record(self, course_id: int, lesson: int, materials: list[Material]) -> None:
        await self.media.add_materials(course_id, lesson, materials)

    async def of_lesson(self, course_id: int, lesson: int) -> list[Material]:
        return await self.media.materials_of_lesson(course_id, lesson)

    async def queue_delivery(
        self,
        effects: Effects,
        course_id: int,
        lesson: int,
        material: Material,
        *,
        room_id: str,
        learner: str,
    ) -> bool:
        """Send the material as a file after the caller's transaction commits: into the room, or,
        for a badge-gated course's (encrypted) material, only into the learner's DM with the bot.
        True when it goes to the DM instead of the room."""
        private = material.key is not None
        payload: dict[str, Any] = {"course_id": course_id, "lesson": lesson, "cid": material.cid}
        if private:
            payload["learner"] = learner
        else:
            payload["room_id"] = room_id
        await effects.record(DELIVERY, payload, room_key=f"dm:{learner}" if private else room_id)
        return private

    async def deliver(self, effect: EffectRow) -> dict[str, Any]:
        """The executor of ``course.material``: decrypt if needed, upload once per CID, send."""
        p = effect.payload
        found = [m for m in await self.of_lesson(p["course_id"], p["lesson"]) if m.cid == p["cid"]]
        if not found:
            raise PermanentFailure(f"no material {p['cid']} in lesson {p['lesson']} any more")
        material = found[0]
        room = p.get("room_id") or await self.messenger.room_for(p["learner"])
        msgtype = MessageType.IMAGE if material.mime.startswith("image/") else MessageType.FILE
        encrypted = await self.matrix.is_encrypted(room)
        # A gated material's plaintext copy is made for this learner only, never reused; in an
        # encrypted room the file is encrypted for this one message.
        mxc = None if encrypted or material.key else await self.media.mxc_of(material.cid)
        if mxc is not None:
            media: dict[str, Any] = {"url": mxc}
        else:
            blob = await self.ipfs.cat(material.cid, timeout=60)
            data = decrypt(blob, material.key) if material.key else blob
            media = await self.matrix.upload_for(
                room, data, mime=material.mime, filename=material.name
            )
            if "url" in media and material.key is None:
                await self.media.set_mxc(
                    material.cid, material.size, material.mime, False, media["url"]
                )
        content = {
            "msgtype": str(msgtype),
            "body": material.name,
            "info": {"mimetype": material.mime, "size": material.size},
            **media,
        }
        event_id = await self.matrix.send_message_event(
            room, EventType.ROOM_MESSAGE, content, txn_id=effect.txn_id
        )
        return {"event_id": str(event_id)}
