"""Settings shared by the benchmark and its Switchboard process (no Matrix client imports here,
so the Switchboard process stays as lean as in production)."""

from __future__ import annotations

import dataclasses
import resource
from pathlib import Path

from appservice.config import Config, RoutingConfig


def configure(
    base: Config,
    *,
    database: str | Path,
    portal_port: int,
    capacity: int = 3,
    invite_timeout: float = 600.0,
    starts_per_minute: int = 1_000_000,
    per_session_limit: int = 1_000_000,
) -> Config:
    """One Switchboard's config: its own SQLite file and portal port on top of ``base``.

    The portal's start limit is raised because every benchmark visitor comes from 127.0.0.1,
    its per-session message and typing limits because one benchmark visitor sends hundreds of
    messages back to back, and the invite timeout is long so no offer expires (and is
    re-routed) during a run.
    """
    return dataclasses.replace(
        base,
        database_url=f"sqlite:///{Path(database).resolve()}",
        portal=dataclasses.replace(
            base.portal,
            port=portal_port,
            public_url=f"http://127.0.0.1:{portal_port}",
            starts_per_minute=starts_per_minute,
            messages_per_minute=per_session_limit,
            message_burst=per_session_limit,
            typing_per_minute=per_session_limit,
            typing_burst=per_session_limit,
        ),
        routing=RoutingConfig(
            capacity=capacity,
            invite_timeout=invite_timeout,
            abandon_after=base.routing.abandon_after,
        ),
    )


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return int(soft)
