"""The homeserver's questions about call signs: does this alias or user exist?

Synapse asks the appservice when someone (on this server or a federated one) resolves an alias
in our namespace, or looks up a user in it, that it does not know yet. A call sign's alias
(``#cs_<sign>``) answers with its lobby, made now if need be; its user (``@sb_cs_<sign>``)
is registered on demand. The answer stays fast: the lobby is usually made already, when the
call sign was set.

Start-up also uses the alias question to learn whether the homeserver's registration has the
call signs' alias namespace (:meth:`CallSignQueries.namespace_missing`): an installation from
before call signs lacks it until the admin regenerates the registration.
"""

from __future__ import annotations

import logging
import secrets

from mautrix.errors import MNotFound
from mautrix.types import RoomAlias

from bridge.callsigns import is_sign
from bridge.services.callsigns import CallSignService

from .config import Config
from .matrix_gateway import MautrixGateway

log = logging.getLogger(__name__)

PROBE = "_probe_"  # no call sign contains "_": a probe never meets a real one


class CallSignQueries:
    def __init__(
        self, config: Config, call_signs: CallSignService, gateway: MautrixGateway
    ) -> None:
        self._config = config
        self._call_signs = call_signs
        self._gateway = gateway
        self._ready = False
        self._probes: set[str] = set()
        prefix = config.directory.call_sign_alias_prefix
        self._alias = (f"#{prefix}", f":{config.homeserver.domain}")
        self._user = (f"@{config.appservice.user_prefix}cs_", f":{config.homeserver.domain}")

    def ready(self) -> None:
        """The database is open: real questions may be answered from now on."""
        self._ready = True

    @staticmethod
    def _inside(text: str, around: tuple[str, str]) -> str | None:
        start, end = around
        if text.startswith(start) and text.endswith(end) and len(text) > len(start) + len(end):
            return text[len(start) : -len(end)]
        return None

    async def alias_exists(self, alias: str) -> bool:
        """Whether ``alias`` is a call sign's (its lobby made, if it was not yet)."""
        sign = self._inside(alias, self._alias)
        if sign is None:
            return False
        if sign.startswith(PROBE):
            self._probes.add(sign)
            return False
        if not self._ready or not is_sign(sign):
            return False
        return await self._call_signs.lobby(sign) is not None

    async def user_exists(self, user_id: str) -> bool:
        """Whether ``user_id`` is a call sign's user (registered now, if it was not yet)."""
        sign = self._inside(user_id, self._user)
        if sign is None or not self._ready or not is_sign(sign):
            return False
        if not await self._call_signs.exists(sign):
            return False
        await self._gateway.call_sign_user_made(sign, sign)
        return True

    async def namespace_missing(self) -> bool:
        """Ask the homeserver to resolve a probe alias of the call signs' namespace: a
        homeserver whose registration has the namespace asks us about it first; one without
        it answers "not found" without asking."""
        probe = f"{PROBE}{secrets.token_hex(6)}"
        alias = RoomAlias(f"{self._alias[0]}{probe}{self._alias[1]}")
        try:
            await self._gateway.bot.resolve_room_alias(alias)
        except MNotFound:
            pass
        return probe not in self._probes
