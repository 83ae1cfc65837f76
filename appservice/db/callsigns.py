"""The call signs of the :class:`bridge.ports.Store` port on SQLite or PostgreSQL
(``call_signs``), and the direct chats Matrix users opened with them (``call_sign_chats``)."""

from __future__ import annotations

from typing import Any

from mautrix.util.async_db import Database

from bridge.callsigns import CallSign
from bridge.groups import GroupId
from bridge.model import AdvisorMxid, RoomId

Row = Any  # sqlite3.Row or asyncpg.Record: both are read by column name

CALL_SIGN_COLUMNS = "sign, advisor, group_id, keywords, listed, lobby_id"


def _call_sign_from_row(row: Row) -> CallSign:
    return CallSign(
        sign=row["sign"],
        advisor=AdvisorMxid(row["advisor"]) if row["advisor"] is not None else None,
        group_id=GroupId(row["group_id"]) if row["group_id"] is not None else None,
        keywords=row["keywords"],
        listed=bool(row["listed"]),
        lobby_id=RoomId(row["lobby_id"]) if row["lobby_id"] is not None else None,
    )


class SqlCallSigns:
    """The ``CallSigns`` port; mixed into :class:`appservice.db.store.SqlStore`."""

    db: Database

    async def call_signs(self) -> list[CallSign]:
        rows = await self.db.fetch(f"SELECT {CALL_SIGN_COLUMNS} FROM call_signs ORDER BY sign")
        return [_call_sign_from_row(row) for row in rows]

    async def get_call_sign(self, sign: str) -> CallSign | None:
        row = await self.db.fetchrow(
            f"SELECT {CALL_SIGN_COLUMNS} FROM call_signs WHERE sign = $1", sign
        )
        return _call_sign_from_row(row) if row else None

    async def call_sign_by_lobby(self, lobby_id: RoomId) -> CallSign | None:
        row = await self.db.fetchrow(
            f"SELECT {CALL_SIGN_COLUMNS} FROM call_signs WHERE lobby_id = $1", lobby_id
        )
        return _call_sign_from_row(row) if row else None

    async def save_call_sign(self, call_sign: CallSign) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in CALL_SIGN_COLUMNS.split(", ")[1:])
        await self.db.execute(
            f"INSERT INTO call_signs ({CALL_SIGN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
            f"ON CONFLICT (sign) DO UPDATE SET {updates}",
            call_sign.sign,
            call_sign.advisor,
            call_sign.group_id,
            call_sign.keywords,
            call_sign.listed,
            call_sign.lobby_id,
        )

    async def remove_call_sign(self, sign: str) -> bool:
        await self.db.execute("DELETE FROM call_sign_chats WHERE sign = $1", sign)
        removed = await self.db.fetchval(
            "DELETE FROM call_signs WHERE sign = $1 RETURNING sign", sign
        )
        return removed is not None

    async def lobby_found(self, sign: str, lobby_id: RoomId) -> None:
        await self.db.execute(
            "UPDATE call_signs SET lobby_id = $2 WHERE sign = $1 AND lobby_id IS NULL",
            sign,
            lobby_id,
        )

    async def add_call_sign_chat(self, room_id: RoomId, sign: str, user: str) -> None:
        await self.db.execute(
            "INSERT INTO call_sign_chats (room_id, sign, user_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id) DO UPDATE SET sign = excluded.sign, user_id = excluded.user_id",
            room_id,
            sign,
            user,
        )

    async def call_sign_chat(self, room_id: RoomId) -> tuple[str, str] | None:
        row = await self.db.fetchrow(
            "SELECT sign, user_id FROM call_sign_chats WHERE room_id = $1", room_id
        )
        return (row["sign"], row["user_id"]) if row else None
