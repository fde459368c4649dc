"""Name resolution that enforces an allowlist on the addresses a connection goes to.

aiohttp connects to exactly the addresses its resolver returns, keeping the URL's
name for the Host header and TLS SNI. So the check and the connect use one
answer: a name cannot resolve to a public address for the check and to an
internal one for the connect (DNS rebinding), because it is resolved once.
"""
from __future__ import annotations

import ipaddress
import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from ..errors import PermissionDenied
from .allowlist import Allowlist

log = logging.getLogger("agentos.egress")


class GuardedResolver(AbstractResolver):
    """``base``'s answers, less the addresses ``allowlist`` does not permit."""

    def __init__(self, base: AbstractResolver, allowlist: Allowlist) -> None:
        self._base = base
        self._allowlist = allowlist

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._base.resolve(host, port, family)
        kept = [a for a in answers if self._permits(a["host"], port)]
        if answers and not kept:
            # The addresses go to the operator's log only: an agent learns nothing of the inside.
            log.info("egress to %s refused: it resolves to %s", host, sorted({a["host"] for a in answers}))
            raise PermissionDenied(f"{host} resolves to an address that is not public and not in the "
                                   "egress allowlist", host=host)
        return kept

    def _permits(self, address: str, port: int) -> bool:
        try:
            return self._allowlist.permits_address(ipaddress.ip_address(address), port)
        except ValueError:
            return False

    async def close(self) -> None:
        # The base resolver is shared by every fetch; its owner closes it.
        pass
