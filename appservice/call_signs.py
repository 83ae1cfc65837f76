"""The homeserver's questions about call signs: does this alias or user exist?

Synapse asks the appservice when someone (on this server or a federated one) resolves an alias
in our namespace, or looks up a user in it, that it does not know yet. A call sign's alias
(``#cs_<sign>``) answers with its lobby, made now if need be; its user (``@sb_cs_<sign>``)
is registered on demand. The answer stays fast: the lobby is usually made already, when the
call sign was set.

Start-up also learns whether the homeserver's registration has the call signs' alias namespace
(:meth:`CallSignQueries.namespace_missing`): an installation from before call signs lacks it
until the admin regenerates the registration.
"""

from __future__ import annotations

import logging

from mautrix.errors import MatrixRequestError

from bridge.callsigns import is_sign
from bridge.services.callsigns import CallSignService

from .config import Config
from .matrix_gateway import MautrixGateway

log = logging.getLogger(__name__)

PROBE = "_probe"  # no call sign contains "_": the probe never meets a real one


class CallSignQueries:
    def __init__(
        self, config: Config, call_signs: CallSignService, gateway: MautrixGateway
    ) -> None:
        self._config = config
        self._call_signs = call_signs
        self._gateway = gateway
        self._ready = False
        prefix = config.directory.call_sign_alias_prefix
        self._alias = (f"#{prefix}", f":{config.homeserver.domain}")
        self._user = (f"@{config.appservice.user_prefix}cs_", f":{config.homeserver.domain}")

    def ready(self) -> None:
        """The database is open: questions may be answered from now on."""
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
        if sign is None or not self._ready or not is_sign(sign):
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
        """Whether the homeserver's registration lacks the call signs' alias namespace: the
        appservice deletes a (never made) alias of it, which the homeserver refuses with
        ``M_EXCLUSIVE`` outside the appservice's namespaces and answers "not found" inside.
        Nothing is asked of this process's endpoint, so it holds for several processes
        behind one registration too."""
        probe = f"{self._config.directory.call_sign_alias_prefix}{PROBE}"
        try:
            await self._gateway.bot.remove_room_alias(probe)  # "not found" is ignored
        except MatrixRequestError as e:
            if e.errcode == "M_EXCLUSIVE":
                return True
            log.warning("could not check the call signs' alias namespace: %s", e)
        except Exception as e:  # the homeserver answered the ping a moment ago: a blip
            log.warning("could not check the call signs' alias namespace: %s", e)
        return False
