"""The JSON shapes of the visitor API (described in openapi.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bridge.model import Message
from bridge.ports import ConversationView
from bridge.services.callsigns import PublicCallSign


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def message_json(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "id": message.id,
        "sender": message.sender.value,
        "author": message.author,
        "body": message.body,
        "ts": iso(message.ts),
        "client_id": message.client_id if message.sender.value == "visitor" else None,
        "reply_to": message.reply_to,
        "edited_at": None if message.edited_at is None else iso(message.edited_at),
        "removed_at": None if message.removed_at is None else iso(message.removed_at),
    }


def view_json(view: ConversationView) -> dict[str, Any]:
    return {
        "id": view.id,
        "status": view.status,
        "queue_position": view.queue_position,
        "advisor_name": view.advisor_name,
        "topic": view.topic,
        "visitor_name": view.visitor_name,
        "read_up_to": view.read_up_to,
        "version": view.version,
        "asked_for": view.asked_for,
    }


def call_sign_json(call_sign: PublicCallSign) -> dict[str, Any]:
    return {
        "sign": call_sign.sign,
        "name": call_sign.name,
        "keywords": call_sign.keywords,
        "alias": call_sign.alias,
    }
