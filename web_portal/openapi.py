"""The OpenAPI document of the visitor API: the same API the portal page uses."""

from __future__ import annotations

from typing import Any


def _error() -> dict[str, Any]:
    return {
        "description": "A clear error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def openapi_document(settings: Any) -> dict[str, Any]:
    csrf: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]
    errors = {code: _error() for code in ("400", "403", "409", "413", "429", "503")}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Switchboard visitor API",
            "version": "1",
            "description": (
                "How a visitor's page talks to Switchboard. GET /api/session first: it sets the "
                "httponly session cookie and returns the CSRF token that every POST must send "
                "in X-CSRF-Token. Live events arrive on the websocket GET /api/ws?since=<seq> "
                "as JSON frames: {type: message, message}, {type: status, conversation}, "
                "{type: typing, typing, name}, {type: read, up_to}; the client may send "
                "{type: ping}. The websocket only accepts the portal's own Origin."
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
                    },
                },
                "ConversationWithMessages": {
                    "type": "object",
                    "required": ["conversation", "messages"],
                    "properties": {
                        "conversation": {
                            "allOf": [{"$ref": "#/components/schemas/Conversation"}],
                            "nullable": True,
                        },
                        "messages": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Message"},
                        },
                    },
                },
                "StartForm": {
                    "type": "object",
                    "required": ["name", "topic", "message"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 80},
                        "email": {"type": "string", "maxLength": 254},
                        "topic": {"type": "string", "enum": list(settings.topics)},
                        "message": {"type": "string", "maxLength": 4000},
                    },
                },
            },
        },
        "paths": {
            "/api/session": {
                "get": {
                    "summary": "Start or resume the visitor's session; returns the CSRF token",
                    "responses": {
                        "200": {
                            "description": "The CSRF token",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"csrf_token": {"type": "string"}},
                                    }
                                }
                            },
                        }
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
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    ],
                    "responses": {
                        "200": _json("ConversationWithMessages", "The conversation"),
                        "400": _error(),
                    },
                },
                "post": {
                    "summary": "Start a conversation (idempotent: an open one is returned)",
                    "security": csrf,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StartForm"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("ConversationWithMessages", "Started"),
                        "200": _json("ConversationWithMessages", "Already open"),
                        **errors,
                    },
                },
            },
            "/api/conversation/messages": {
                "post": {
                    "summary": "Send a message (idempotent per client_id)",
                    "security": csrf,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["client_id", "body"],
                                    "properties": {
                                        "client_id": {"type": "string", "maxLength": 64},
                                        "body": {"type": "string", "maxLength": 4000},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Stored",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "message": {"$ref": "#/components/schemas/Message"}
                                        },
                                    }
                                }
                            },
                        },
                        **errors,
                    },
                }
            },
            "/api/conversation/typing": {
                "post": {
                    "summary": "Tell the advisor whether the visitor is typing",
                    "security": csrf,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["typing"],
                                    "properties": {"typing": {"type": "boolean"}},
                                }
                            }
                        },
                    },
                    "responses": {"204": {"description": "Sent"}, **errors},
                }
            },
            "/api/conversation/read": {
                "post": {
                    "summary": "The visitor has seen the advisor's messages up to this seq",
                    "security": csrf,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["up_to"],
                                    "properties": {"up_to": {"type": "integer", "minimum": 1}},
                                }
                            }
                        },
                    },
                    "responses": {"204": {"description": "Sent"}, **errors},
                }
            },
            "/api/conversation/end": {
                "post": {
                    "summary": "End the conversation",
                    "security": csrf,
                    "responses": {
                        "200": {
                            "description": "Ended",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "conversation": {
                                                "$ref": "#/components/schemas/Conversation"
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **errors,
                    },
                }
            },
        },
    }
