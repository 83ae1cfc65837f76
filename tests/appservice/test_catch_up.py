"""When Switchboard reads the rooms again, and how far back (appservice.catch_up).

The end-to-end behaviour, against a real homeserver, is in tests/faults/test_catch_up.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest
from mautrix.errors import MatrixConnectionError, MatrixStandardRequestError

from appservice.catch_up import FOLLOW_UPS, MARGIN, PAGE, CatchUp, HomeserverWatch
from appservice.transactions import AppserviceEndpoint
from bridge.model import RoomId
from tests.fakes import FakeClock


def test_nothing_to_catch_up_on_until_something_suggests_a_loss():
    watch = HomeserverWatch(FakeClock())
    watch.pushed()
    assert watch.gap() is None


def test_a_gap_starts_before_the_last_push_and_before_it_was_noticed():
    clock = FakeClock()
    watch = HomeserverWatch(clock)
    watch.pushed()
    pushed_at = clock.now()
    clock.advance(300)
    watch.suspect_gap("down")
    assert watch.gap() == (pushed_at - MARGIN, 1)
    clock.advance(10)
    watch.suspect_gap("still down")  # noticed again: the start stays the earliest
    assert watch.gap() == (pushed_at - MARGIN, 2)


def test_a_catch_up_clears_only_the_gap_it_covered():
    clock = FakeClock()
    watch = HomeserverWatch(clock)
    watch.suspect_gap("down")
    _, generation = watch.gap()  # type: ignore[misc]
    watch.suspect_gap("down again, while the catch-up ran")
    watch.caught_up(generation)
    assert watch.gap() is not None  # still due now


def test_after_a_catch_up_the_rooms_are_read_again_later_then_left_alone():
    clock = FakeClock()
    watch = HomeserverWatch(clock)
    watch.suspect_gap("down")
    start, _ = watch.gap()  # type: ignore[misc]
    for delay in FOLLOW_UPS:
        watch.caught_up(watch.gap()[1])  # type: ignore[index]
        assert watch.gap() is None and not watch.settled
        clock.advance(delay)
        assert watch.gap()[0] == start  # type: ignore[index]
    watch.caught_up(watch.gap()[1])  # type: ignore[index]
    assert watch.settled
    clock.advance(3600)
    assert watch.gap() is None


def test_a_start_up_gap_begins_at_the_last_recorded_push():
    clock = FakeClock()
    watch = HomeserverWatch(clock)
    watch.suspect_gap("started", since=clock.now() - 3600)
    assert watch.gap() == (clock.now() - 3600 - MARGIN, 1)


def _event(n: int, ts: int) -> dict[str, Any]:
    return {"event_id": f"$e{n}", "origin_server_ts": ts, "type": "m.room.message"}


class Rooms:
    """Rooms' timelines as /messages serves them: newest first, a page at a time."""

    def __init__(self, timelines: dict[str, list[dict[str, Any]]]) -> None:
        self.timelines = timelines
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.failing: dict[str, Exception] = {}

    async def request(self, _method: Any, path: Any, query_params: dict[str, str]) -> Any:
        room = unquote(str(path).split("/rooms/")[1].split("/")[0])
        self.requests.append((room, dict(query_params)))
        if room in self.failing:
            raise self.failing[room]
        newest_first = list(reversed(self.timelines[room]))
        start = int(query_params.get("from", "0"))
        chunk = newest_first[start : start + int(query_params["limit"])]
        end = start + len(chunk)
        return {"chunk": chunk, **({"end": str(end)} if end < len(newest_first) else {})}


class Endpoint:
    def __init__(self) -> None:
        self.handled: list[str] = []

    async def replay(self, read: Any) -> int:
        events = await read()
        self.handled += [e["event_id"] for e in events]
        return len(events)


def _catch_up(rooms: Rooms, endpoint: Endpoint) -> CatchUp:
    async def served() -> list[RoomId]:
        return [RoomId(r) for r in rooms.timelines]

    return CatchUp(rooms, served, endpoint)  # type: ignore[arg-type]


async def test_events_since_the_gap_are_handed_over_oldest_first_and_paging_stops_there():
    old = [_event(i, 1_000 + i) for i in range(3 * PAGE)]
    recent = [_event(10_000 + i, 50_000 + i) for i in range(PAGE + 5)]
    rooms = Rooms({"!a": old + recent, "!b": old[:2]})
    endpoint = Endpoint()
    assert await _catch_up(rooms, endpoint).run(since=50.0)
    assert endpoint.handled == [e["event_id"] for e in recent]
    assert [r for r, _ in rooms.requests] == ["!a", "!a", "!b"]  # not the whole history


async def test_a_homeserver_still_away_means_try_again_and_a_room_we_left_is_skipped():
    rooms = Rooms({"!gone": [_event(1, 60_000)], "!ok": [_event(2, 60_000)]})
    rooms.failing["!gone"] = MatrixStandardRequestError(403, "not in the room")
    endpoint = Endpoint()
    assert await _catch_up(rooms, endpoint).run(since=0.0)
    assert endpoint.handled == ["$e2"]

    rooms.failing["!gone"] = MatrixConnectionError("refused")
    assert not await _catch_up(rooms, endpoint).run(since=0.0)


@pytest.mark.parametrize("status", [502, 503, 429])
async def test_a_busy_or_unavailable_homeserver_means_try_again(status):
    rooms = Rooms({"!a": [_event(1, 60_000)]})
    rooms.failing["!a"] = MatrixStandardRequestError(status, "busy")
    assert not await _catch_up(rooms, Endpoint()).run(since=0.0)


class MemoryLog:
    def __init__(self) -> None:
        self.transactions: set[str] = set()
        self.events: set[str] = set()

    async def transaction_done(self, txn_id: str) -> bool:
        return txn_id in self.transactions

    async def mark_transaction(self, txn_id: str) -> None:
        self.transactions.add(txn_id)

    async def event_handled(self, event_id: str) -> bool:
        return event_id in self.events

    async def mark_event(self, event_id: str) -> None:
        self.events.add(event_id)


class Handled:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def handle(self, event: Any) -> None:
        self.bodies.append(event["content"]["body"])

    async def handle_ephemeral(self, event: Any) -> None:
        pass


def _said(n: int, room: str = "!r:hs") -> dict[str, Any]:
    return {
        "event_id": f"$a{n}",
        "room_id": room,
        "type": "m.room.message",
        "origin_server_ts": 1_000 + n,
        "content": {"msgtype": "m.text", "body": f"a{n}"},
    }


@pytest.mark.parametrize("gap", [False, True])
async def test_a_push_after_one_the_homeserver_held_back_comes_in_order(aiohttp_client, gap):
    # Synapse stored a transaction for us that it never sent (a2), then pushed the next one
    # (a3). While a loss is suspected, the room's earlier events are read back first.
    clock = FakeClock()
    watch = HomeserverWatch(clock)
    if gap:
        watch.suspect_gap("Switchboard started", since=clock.now() - 5)
    sink, reads = Handled(), []
    endpoint = AppserviceEndpoint("hs-token", MemoryLog(), sink, watch)

    async def read_back(room_id: str, since: float) -> list[dict[str, Any]]:
        reads.append((room_id, since))
        return [_said(1), _said(2), _said(3)]

    endpoint.read_back = read_back
    client = await aiohttp_client(endpoint.app())
    headers = {"Authorization": "Bearer hs-token"}
    first = await client.put(
        "/_matrix/app/v1/transactions/1", json={"events": [_said(1)]}, headers=headers
    )
    assert first.status == 200
    third = await client.put(
        "/_matrix/app/v1/transactions/3", json={"events": [_said(3)]}, headers=headers
    )
    assert third.status == 200
    if gap:
        assert sink.bodies == ["a1", "a2", "a3"]
        assert reads and all(since <= clock.now() - 5 for _, since in reads)
    else:  # nothing suggests a loss: no reading back on the message path
        assert sink.bodies == ["a1", "a3"] and not reads
