"""Projects: the unit that owns API keys, that usage is reported by, and that may have a budget
shared by all its keys.

Every function takes an open :class:`~sqlalchemy.ext.asyncio.AsyncSession`; the ones that
change data commit before they return.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from control.audit import Audit
from control.errors import Conflict, NotFound
from control.models import Project, utcnow
from control.schemas import ProjectCreate, ProjectPublic, ProjectUpdate


async def list_projects(session: AsyncSession, *, project_ids: set[str] | None = None) -> list[ProjectPublic]:
    """Every project, or only those in ``project_ids`` unless None."""
    query = select(Project).order_by(Project.created_at, Project.name)
    if project_ids is not None:
        query = query.where(Project.id.in_(project_ids))
    return [ProjectPublic.model_validate(p) for p in await session.scalars(query)]


async def create_project(
    session: AsyncSession, spec: ProjectCreate | str, *, audit: Audit | None = None
) -> ProjectPublic:
    """A new project (``spec`` may be just its name); :class:`Conflict` if the name is taken."""
    if isinstance(spec, str):
        spec = ProjectCreate(name=spec)
    name = spec.name
    if await _by_name(session, name) is not None:
        raise Conflict(f"a project named {name!r} already exists", param="name", code="project_exists")
    now = utcnow()
    project = Project(
        name=name,
        budget_tokens=spec.budget_tokens,
        budget_usd=spec.budget_usd,
        budget_period=spec.budget_period,
        created_at=now,
        updated_at=now,
    )
    session.add(project)
    try:
        if audit is not None:
            await session.flush()
            await audit.append(
                session, "project.create", f"project:{project.id}", project_id=project.id,
                changes=spec.model_dump(exclude_none=True),
            )
        await session.commit()
    except IntegrityError as exc:  # created by a concurrent request since the check above
        await session.rollback()
        raise Conflict(f"a project named {name!r} already exists", param="name", code="project_exists") from exc
    return ProjectPublic.model_validate(project)


async def update_project(
    session: AsyncSession, ref: str | Project, spec: ProjectUpdate, *, audit: Audit | None = None
) -> ProjectPublic:
    """Change the budget fields given in ``spec`` (``None`` clears) of the project named or with
    id ``ref``; gateways follow within their refresh interval."""
    project = ref if isinstance(ref, Project) else await find_project(session, ref, param="name_or_id")
    changes = spec.model_dump(include=spec.model_fields_set)
    if changes:
        for field, value in changes.items():
            setattr(project, field, value)
        project.updated_at = utcnow()
        if audit is not None:
            await audit.append(session, "project.update", f"project:{project.id}", project_id=project.id, changes=changes)
        await session.commit()
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
