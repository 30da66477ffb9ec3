"""Projects: the unit that owns API keys and that usage is reported by.

Every function takes an open :class:`~sqlalchemy.ext.asyncio.AsyncSession`; the ones that
change data commit before they return.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from control.errors import Conflict, NotFound
from control.models import Project
from control.schemas import ProjectPublic


async def list_projects(session: AsyncSession) -> list[ProjectPublic]:
    rows = await session.scalars(select(Project).order_by(Project.created_at, Project.name))
    return [ProjectPublic.model_validate(p) for p in rows]


async def create_project(session: AsyncSession, name: str) -> ProjectPublic:
    """A new project; :class:`Conflict` if the name is taken."""
    if await _by_name(session, name) is not None:
        raise Conflict(f"a project named {name!r} already exists", param="name", code="project_exists")
    project = Project(name=name)
    session.add(project)
    try:
        await session.commit()
    except IntegrityError as exc:  # created by a concurrent request since the check above
        await session.rollback()
        raise Conflict(f"a project named {name!r} already exists", param="name", code="project_exists") from exc
    return ProjectPublic.model_validate(project)


async def find_project(session: AsyncSession, ref: str, *, param: str = "project") -> Project:
    """The project named ``ref`` or, failing that, with id ``ref``; :class:`NotFound` otherwise."""
    project = await _by_name(session, ref) or await session.get(Project, ref)
    if project is None:
        raise NotFound(f"no project named {ref!r}", param=param, code="project_not_found")
    return project


async def ensure_project(session: AsyncSession, name: str) -> Project:
    """The project named ``name``, created (not yet committed) if missing; safe under races."""
    project = await _by_name(session, name)
    if project is not None:
        return project
    try:
        async with session.begin_nested():
            project = Project(name=name)
            session.add(project)
    except IntegrityError:  # a concurrent transaction created it first
        project = await _by_name(session, name)
        assert project is not None
    return project


async def _by_name(session: AsyncSession, name: str) -> Project | None:
    return await session.scalar(select(Project).where(Project.name == name))
