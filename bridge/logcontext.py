"""Which conversation the current task works on, so every log line about it carries its id.

The core sets it where a conversation is handled (the outbox dispatcher per row, the services
where they find the conversation of a request or a room); the appservice's logging filter adds
it to each record (``appservice.logs.ConversationFilter``). A context variable, so concurrent
tasks never see each other's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

CONVERSATION: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conversation", default=None
)


def current_conversation() -> str | None:
    """The conversation the current task's log lines are about, if any."""
    return CONVERSATION.get()


def working_on(conversation_id: str | None) -> None:
    """From here on, the current task's log lines are about this conversation (None: none).
    For a request or a Matrix event, which runs in a task (or a scope) of its own."""
    CONVERSATION.set(conversation_id)


@contextmanager
def about(conversation_id: str | None) -> Iterator[None]:
    """Log lines written inside the block are about this conversation."""
    token = CONVERSATION.set(conversation_id)
    try:
        yield
    finally:
        CONVERSATION.reset(token)
