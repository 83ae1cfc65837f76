"""How listings show an advisor: only online and !available counts as shown to the public."""

from __future__ import annotations

import pytest

from bridge.model import Advisor, AdvisorMxid, Presence
from bridge.services.directory import Availability, availability


@pytest.mark.parametrize(
    "said_available, presence, shown",
    [
        (True, Presence.ONLINE, Availability.AVAILABLE),
        (True, Presence.UNKNOWN, Availability.UNKNOWN),  # routing may try them; never public
        (True, Presence.UNAVAILABLE, Availability.AWAY),  # their client says idle
        (True, Presence.OFFLINE, Availability.OFFLINE),
        (False, Presence.ONLINE, Availability.AWAY),
        (False, Presence.UNKNOWN, Availability.AWAY),
        (False, Presence.OFFLINE, Availability.OFFLINE),
    ],
)
def test_only_an_online_advisor_who_said_available_is_shown_as_available(
    said_available: bool, presence: Presence, shown: Availability
) -> None:
    advisor = Advisor(AdvisorMxid("@ana:test"), available=said_available, presence=presence)
    assert availability(advisor) is shown
