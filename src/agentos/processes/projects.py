"""PURGE: wipe a project's mailboxes, state, registered names and volumes (``agentos down --volumes``).

A project's durable data is everything kept under its agents' principals, which hold
the project as a segment of their path: ``uid:1000/@team/worker``. A uid's purge
removes what lives under ``uid:<its uid>/@team``, so one user never wipes another's
team of the same name; an admin's removes the project's data of every uid. What an
agent of the project registered (its aliases, scoped under its spawner's principal)
goes with it; the kernel-wide ``shared`` state store is nobody's project and stays. Its named
volumes (``processes.volumes``) are kept by uid too: the caller's own, or every uid's for an admin.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import Busy, PermissionDenied
from ..kernel.syscalls import Call, Handler
from ..permissions.principal import project_segment
from ..protocol import Op
from ..protocol.requests import PurgeRequest

if TYPE_CHECKING:
    from .service import ProcessService


class ProjectStore(Protocol):
    """A service that keeps data under agents' principals (mailboxes, state): PURGE empties it."""

    async def purge(self, root: str) -> dict[str, int]:
        """Remove what is kept at or beneath the principal glob ``root``; counts by kind."""
        ...


class Projects:
    """The processes service's PURGE syscall."""

    def __init__(self, service: ProcessService, stores: Sequence[ProjectStore]) -> None:
        self.service = service
        self.stores = tuple(stores)

    def syscalls(self) -> Mapping[Op, Handler]:
        return {Op.PURGE: self.purge}

    async def purge(self, call: Call) -> dict[str, Any]:
        """``{project}`` -> ``{project, roots, messages, dead_letters, names, agents, keys, volumes}``.

        Only an admin, or an outside client for its own uid's part of the project; an agent
        that is not an admin may not, whatever project it is in (it would wipe its own team's
        mail and state from under its siblings). Refused with ``busy`` while an agent whose
        data it would remove still runs: stop the team first (``agentos down``)."""
        project = cast(PurgeRequest, call.request).project
        identity = call.identity
        permissions = self.service.permissions
        admin = permissions.is_admin(identity)
        if not admin and identity.agent_id is not None:
            raise PermissionDenied("only an admin or the project's owner (an outside client of its uid) "
                                   "may purge a project", field="project", project=project)
        # A glob over principals: every uid's part for an admin, the caller's own otherwise.
        root = f"*/{project_segment(project)}" if admin else f"uid:{identity.uid}/{project_segment(project)}"
        running = [a for a in self.service.table.running() if a.project == project
                   and (admin or permissions.agent_principal(a.id).startswith(f"{root}/"))]
        if running:
            raise Busy(f"project {project!r} still runs {', '.join(sorted(a.name for a in running))}: "
                       "stop its agents first (agentos down)", project=project,
                       running=sorted(a.name for a in running))
        removed: dict[str, Any] = {"project": project, "roots": [root]}
        for store in self.stores:
            removed.update(await store.purge(root))
        removed["volumes"] = await self.service.volumes.purge(None if admin else identity.uid, project)
        return removed
