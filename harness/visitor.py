"""A visitor driving the portal's real HTTP and websocket API, as the page does."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Callable

import aiohttp

FORM = {
    "name": "Vera Visitor",
    "email": "vera@example.org",
    "topic": "billing",
    "message": "Hello, I was charged twice.",
}


class Visitor:
    def __init__(self, portal_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.url = portal_url
        self.http = session or aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._leaving = False
        self.conversation: dict[str, Any] | None = None

    async def open(self) -> "Visitor":
        async with self.http.get(f"{self.url}/api/session") as r:
            assert r.status == 200, await r.text()
            self.csrf = (await r.json())["csrf_token"]
        return self

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.url}{path}",
            json=body,
            headers={"X-CSRF-Token": self.csrf, "Origin": self.url},
        ) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None)

    async def start(self, **changes: Any) -> dict[str, Any]:
        status, body = await self.post("/api/conversation", {**FORM, **changes})
        assert status in (200, 201), body
        self.conversation = body["conversation"]
        return body

    async def say(self, text: str, client_id: str | None = None) -> dict[str, Any]:
        status, body = await self.post(
            "/api/conversation/messages",
            {"client_id": client_id or uuid.uuid4().hex, "body": text},
        )
        assert status == 201, body
        return body["message"]

    async def history(self, since: int = 0) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/api/conversation", params={"since": since}) as r:
            assert r.status == 200
            return await r.json()

    async def connect(self, since: int = 0) -> None:
        self._leaving = False
        self.ws = await self.http.ws_connect(f"{self.url}/api/ws?since={since}", origin=self.url)
        self._reader = asyncio.create_task(self._read(self.ws))

    def last_seq(self) -> int:
        return max([m["seq"] for m in self.messages()] or [0])

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                async with self._changed:
                    self.frames.append(json.loads(frame.data))
                    self._changed.notify_all()
        async with self._changed:
            self.frames.append({"type": "closed", "code": ws.close_code})
            self._changed.notify_all()
        # the server closed it (restart, catch-up): come back from the last seq, as the page does
        while not self._leaving and ws.close_code != 4401:
            await asyncio.sleep(0.2)
            try:
                self.ws = await self.http.ws_connect(
                    f"{self.url}/api/ws?since={self.last_seq()}", origin=self.url
                )
            except (aiohttp.ClientError, OSError):
                continue
            self._reader = asyncio.create_task(self._read(self.ws))
            return

    async def disconnect(self) -> None:
        self._leaving = True
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader
        self.ws = None

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10,
        what: str = "a frame",
    ) -> dict[str, Any]:
        async def found() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for frame in self.frames:
                        if predicate(frame):
                            return frame
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(found(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {timeout}s; frames: {self.frames[-15:]}"
            ) from None

    async def wait_status(self, status: str, **fields: Any) -> dict[str, Any]:
        def match(f: dict[str, Any]) -> bool:
            c = f.get("conversation") or {}
            return (
                f.get("type") == "status"
                and c.get("status") == status
                and all(c.get(k) == v for k, v in fields.items())
            )

        return (await self.wait_for(match, what=f"status {status} {fields}"))["conversation"]

    async def wait_message(self, body: str, timeout: float = 10) -> dict[str, Any]:
        frame = await self.wait_for(
            lambda f: f.get("type") == "message" and f["message"]["body"] == body,
            timeout,
            what=f"message {body!r}",
        )
        return frame["message"]

    def messages(self) -> list[dict[str, Any]]:
        return [f["message"] for f in self.frames if f.get("type") == "message"]

    def shown(self) -> dict[int, dict[str, Any]]:
        """Each message by seq as a page shows it after every frame so far: edits and
        removals (``update`` frames) applied, the newest state winning as on the page."""

        def rank(m: dict[str, Any]) -> tuple[int, str]:
            if m.get("removed_at"):
                return (2, m["removed_at"])
            return (1, m["edited_at"]) if m.get("edited_at") else (0, "")

        seen: dict[int, dict[str, Any]] = {}
        for frame in self.frames:
            if frame.get("type") in ("message", "update"):
                m = frame["message"]
                if m["seq"] not in seen or rank(m) >= rank(seen[m["seq"]]):
                    seen[m["seq"]] = m
        return seen

    async def wait_shown(
        self,
        predicate: Callable[[dict[int, dict[str, Any]]], bool],
        what: str,
        timeout: float = 10,
    ) -> dict[int, dict[str, Any]]:
        """Wait until what the page shows (see :meth:`shown`) satisfies ``predicate``."""
        await self.wait_for(lambda _: predicate(self.shown()), timeout, what)
        return self.shown()

    async def close(self) -> None:
        await self.disconnect()
        await self.http.close()
