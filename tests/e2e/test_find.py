"""An advisor finds groups and advisors from a real Matrix client: !find with a keyword typed
without its accent finds an accented group, and !directory shows the tree."""

from __future__ import annotations

from tests.desks import start_with_admin


async def test_an_advisor_finds_an_accented_group_and_sees_the_directory(desks, people):
    admin = await start_with_admin(desks, people)
    bot = admin.bot
    ana = await people.advisor(None, "ana")

    await admin.tell(
        (f"!advisor add {ana.user_id}", "is now an advisor"),
        ("!group create support", "created"),
        ("!group create support/billing Facturación", "created"),
        (f"!group add support/billing {ana.user_id}", "is now in support/billing"),
    )

    control = await ana.wait_for_invite(timeout=20)
    await ana.join(control)
    await ana.wait_for_message(control, "You are now a Switchboard advisor", sender=bot)
    await ana.send_text(control, "!find factura")
    found = await ana.wait_for_message(control, "Found for 'factura'", sender=bot)
    assert "support/billing — Facturación: " in found.body
    await ana.send_text(control, "!find ANA")
    found = await ana.wait_for_message(control, "Found for 'ANA'", sender=bot)
    (line,) = [x for x in found.body.splitlines() if ana.user_id in x]
    assert line.startswith(f"○ {ana.user_id}") and line.endswith("— away")
    await ana.send_text(control, "!directory")
    tree = await ana.wait_for_message(control, "Directory", sender=bot)
    # Ana has not said !available: counted, but not shown to visitors
    assert "    ○ support/billing — Facturación: 0 of 1 available" in tree.body.splitlines()
