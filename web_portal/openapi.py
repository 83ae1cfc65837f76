"""The OpenAPI document of the visitor API: the same API the portal page uses."""

from __future__ import annotations

from typing import Any, Sequence

from bridge.validation import MAX_EMAIL, MAX_MESSAGE, MAX_NAME, MAX_QUERY

from .inputs import CALL_SIGN, EMAIL, MAX_CALL_SIGN, MAX_CLIENT_ID, MAX_SEQ, VISIBLE


def _text(max_length: int) -> dict[str, Any]:
    """A required text: at most ``max_length`` characters, at least one of them visible."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": VISIBLE}


def _ref(schema: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _content(schema: str | dict[str, Any]) -> dict[str, Any]:
    """A JSON body: a component's name, or an inline schema."""
    return {"application/json": {"schema": _ref(schema) if isinstance(schema, str) else schema}}


def _json(schema: str | dict[str, Any], description: str) -> dict[str, Any]:
    """A response with a JSON body."""
    return {"description": description, "content": _content(schema)}


def _error() -> dict[str, Any]:
    return _json("Error", "A clear error")


def _too_many() -> dict[str, Any]:
    """A 429: refused, nothing done; Retry-After says when the same request would pass."""
    return {
        **_json("Error", "Over a rate limit; nothing was stored or sent"),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before sending it again",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }


def _body(schema: str | dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body."""
    return {"required": True, "content": _content(schema)}


def _object(properties: dict[str, dict[str, Any]], required: Sequence[str] = ()) -> dict[str, Any]:
    shape: dict[str, Any] = {"type": "object"}
    if required:
        shape["required"] = list(required)
    shape["properties"] = properties
    return shape


def _post(
    summary: str, responses: dict[str, Any], body: str | dict[str, Any] | None = None
) -> dict[str, Any]:
    """A state-changing call: session cookie and CSRF token, and every error a POST can get."""
    operation: dict[str, Any] = {"summary": summary, "security": [{"session": [], "csrf": []}]}
    if body is not None:
        operation["requestBody"] = _body(body)
    errors = {code: _error() for code in ("400", "403", "409", "413", "503")}
    errors["429"] = _too_many()
    operation["responses"] = {**responses, **errors}
    return operation


def openapi_document(settings: Any) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Switchboard visitor API",
            "version": "1",
            "description": (
                "How a visitor's page talks to Switchboard. GET /api/session first: it sets the "
                "httponly session cookie and returns the CSRF token that every POST must send "
                "in X-CSRF-Token. Live events arrive on the websocket GET /api/ws?since=<seq> "
                "as JSON frames: {type: message, message}, {type: update, message} (an "
                "edit or removal of a message the page may have; with `since`, the backlog "
                "starts with the changes of messages up to it), {type: status, conversation}, "
                "{type: typing, typing, name}, {type: read, up_to}; the client may send "
                "{type: ping}. The websocket only accepts the portal's own Origin. "
                "GET /api/call-signs?q=<words> (no session needed) finds the call signs (an "
                "advisor or a team) matching every word by its beginning, accents and case "
                "aside, that someone could answer now; a start may name one in call_sign. Texts "
                "are kept as sent except that control and format characters are removed and "
                "surrounding whitespace is trimmed; what is left must not be empty. "
                "Limits: new chats and searches per client address, and messages per session "
                "(a burst, then a steady rate); a message over its limit is refused with 429 and "
                "Retry-After and is not stored, while sending a stored message's client_id "
                "again is always answered. Typing notifications over their rate are dropped "
                "(still answered 204), but a stop always follows a start that went through."
            ),
        },
        "servers": [{"url": settings.public_url}],
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "sb_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "ref": {"type": "string", "nullable": True},
                                "field": {"type": "string", "nullable": True},
                            },
                        }
                    },
                },
                "Conversation": {
                    "type": "object",
                    "required": [
                        "id",
                        "status",
                        "queue_position",
                        "advisor_name",
                        "topic",
                        "visitor_name",
                        "read_up_to",
                        "version",
                        "asked_for",
                    ],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": ["waiting", "inviting", "active", "ended"],
                        },
                        "queue_position": {"type": "integer", "nullable": True, "minimum": 1},
                        "advisor_name": {"type": "string", "nullable": True},
                        "topic": {"type": "string"},
                        "visitor_name": {"type": "string"},
                        "read_up_to": {"type": "integer", "minimum": 0},
                        "version": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Counts the conversation's changes: a page ignores "
                            "a status older than the one it shows.",
                        },
                        "asked_for": {
                            "type": "string",
                            "nullable": True,
                            "description": "The name of the advisor or team behind the call "
                            "sign the visitor picked, if any.",
                        },
                    },
                },
                "Message": {
                    "type": "object",
                    "required": ["seq", "id", "sender", "author", "body", "ts"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "id": {"type": "string"},
                        "sender": {"type": "string", "enum": ["visitor", "advisor", "system"]},
                        "author": {"type": "string"},
                        "body": {"type": "string"},
                        "ts": {"type": "string", "format": "date-time"},
                        "client_id": {"type": "string", "nullable": True},
                        "reply_to": {
                            "type": "integer",
                            "minimum": 1,
                            "nullable": True,
                            "description": "The seq of the message this one answers (shown "
                            "as a quote of it)",
                        },
                        "edited_at": {
                            "type": "string",
                            "format": "date-time",
                            "nullable": True,
                            "description": "When the body was last edited (it is the latest)",
                        },
                        "removed_at": {
                            "type": "string",
                            "format": "date-time",
                            "nullable": True,
                            "description": "When the message was removed (the body is then "
                            "empty and the page shows nothing of it)",
                        },
                    },
                },
                "ConversationWithMessages": {
                    "type": "object",
                    "required": ["conversation", "messages"],
                    "properties": {
                        "conversation": {
                            "allOf": [_ref("Conversation")],
                            "nullable": True,
                        },
                        "messages": {"type": "array", "items": _ref("Message")},
                    },
                },
                "StartForm": {
                    "type": "object",
                    "required": ["name", "topic", "message"],
                    "properties": {
                        "name": _text(MAX_NAME),
                        "email": {
                            "type": "string",
                            "nullable": True,
                            "maxLength": MAX_EMAIL,
                            "pattern": EMAIL,
                            "description": "Empty or null if the visitor gives none",
                        },
                        "topic": {"type": "string", "enum": list(settings.topics)},
                        "message": _text(MAX_MESSAGE),
                        "call_sign": {
                            "type": "string",
                            "nullable": True,
                            "maxLength": MAX_CALL_SIGN,
                            "pattern": CALL_SIGN,
                            "description": "A call sign from GET /api/call-signs: the chat "
                            "goes to its advisor or team. Empty or null for none. One that "
                            "nobody could answer at that moment (or no call sign at all) is "
                            "refused with 400 on the field call_sign",
                        },
                    },
                },
                "CallSign": {
                    "type": "object",
                    "required": ["sign", "name", "keywords", "alias"],
                    "properties": {
                        "sign": {
                            "type": "string",
                            "description": "What a start sends as call_sign",
                        },
                        "name": {
                            "type": "string",
                            "description": "The advisor's or the team's name, to show",
                        },
                        "keywords": {"type": "string"},
                        "alias": {
                            "type": "string",
                            "description": "Its Matrix address, for Matrix users",
                        },
                    },
                },
            },
        },
        "paths": {
            "/api/session": {
                "get": {
                    "summary": "Start or resume the visitor's session; returns the CSRF token",
                    "responses": {
                        "200": _json(_object({"csrf_token": {"type": "string"}}), "The CSRF token")
                    },
                }
            },
            "/api/conversation": {
                "get": {
                    "summary": "The visitor's latest conversation and its messages after `since`",
                    "parameters": [
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "description": "Only the messages after this seq, and those up "
                            "to it that were edited or removed; 0 (default): all",
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    ],
                    "responses": {
                        "200": _json("ConversationWithMessages", "The conversation"),
                        "400": _error(),
                    },
                },
                "post": _post(
                    "Start a conversation (idempotent: an open one is returned)",
                    {
                        "201": _json("ConversationWithMessages", "Started"),
                        "200": _json("ConversationWithMessages", "Already open"),
                    },
                    body="StartForm",
                ),
            },
            "/api/conversation/messages": {
                "post": _post(
                    "Send a message (idempotent per client_id)",
                    {"201": _json(_object({"message": _ref("Message")}), "Stored")},
                    body=_object(
                        {
                            "client_id": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_CLIENT_ID,
                                "description": (
                                    "Chosen by the client, unique per message and the same "
                                    "when it is sent again: a retry returns the stored message"
                                ),
                            },
                            "body": _text(MAX_MESSAGE),
                        },
                        required=["client_id", "body"],
                    ),
                )
            },
            "/api/conversation/typing": {
                "post": _post(
                    "Tell the advisor whether the visitor is typing (over the rate: dropped)",
                    {"204": {"description": "Sent"}},
                    body=_object({"typing": {"type": "boolean"}}, required=["typing"]),
                )
            },
            "/api/conversation/read": {
                "post": _post(
                    "The visitor has seen the advisor's messages up to this seq",
                    {"204": {"description": "Sent"}},
                    body=_object(
                        {"up_to": {"type": "integer", "minimum": 1, "maximum": MAX_SEQ}},
                        required=["up_to"],
                    ),
                )
            },
            "/api/call-signs": {
                "get": {
                    "summary": "Call signs matching the search that someone could answer now",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": True,
                            "description": "Words, each the beginning of a word of the call "
                            "sign, its keywords or its advisor's or team's name (accents and "
                            "case do not count); with no word, nothing is found",
                            "schema": {"type": "string", "maxLength": MAX_QUERY},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            _object(
                                {"call_signs": {"type": "array", "items": _ref("CallSign")}},
                                required=["call_signs"],
                            ),
                            "At most 10, by sign",
                        ),
                        "400": _error(),
                        "429": _too_many(),
                        "503": _error(),
                    },
                }
            },
            "/api/conversation/end": {
                "post": _post(
                    "End the conversation",
                    {"200": _json(_object({"conversation": _ref("Conversation")}), "Ended")},
                )
            },
        },
    }
