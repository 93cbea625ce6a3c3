"""FastAPI dependencies shared by every router (the benchmarks and dashboard routers too):
``get_runtime``, ``current_user``, ``require_roles``, ``db_session``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ..db.models import User
from ..errors import AuthenticationError, ForbiddenError
from ..runtime import Runtime
from ..users.service import authenticate

_bearer = HTTPBearer(auto_error=False, description="an API token from `fedqi-aggregator user add`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def db_session(runtime: Runtime = Depends(get_runtime)) -> Iterator[Session]:
    """A read session (rolled back at the end of the request)."""
    with runtime.db.read() as session:
        yield session


def current_user(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    runtime: Runtime = Depends(get_runtime),
) -> User:
    if credentials is None:
        raise AuthenticationError(
            "authorization: send an API token as 'Authorization: Bearer <token>'", code="bad-token"
        )
    with runtime.db.read() as session:
        user = authenticate(session, credentials.credentials, runtime.now())
        session.expunge(user)
    return user


def require_roles(*roles: str) -> Callable[..., User]:
    def dependency(user: User = Depends(current_user)) -> User:
        if user.role not in roles:
            raise ForbiddenError(
                f"role: this needs one of {', '.join(roles)}; you are {user.role}", code="role"
            )
        return user

    return dependency
