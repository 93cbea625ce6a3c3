"""Who is asking: the FastAPI dependencies that turn a request's API token into a
:class:`~aggregator.db.models.User` (``current_user``) and refuse other roles
(``require_roles``). Every router uses these; the dashboard signs in with the same tokens
(:func:`aggregator.users.service.authenticate`) and keeps a server-side session."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..db.models import User
from ..errors import AuthenticationError, ForbiddenError
from ..runtime import Runtime, get_runtime
from .service import ROLE_NOUNS, authenticate

_bearer = HTTPBearer(auto_error=False, description="an API token from `fedqi-aggregator user add`")


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
                f"role: this needs one of {', '.join(roles)}; you are "
                f"{ROLE_NOUNS.get(user.role, user.role)}",
                code="role",
            )
        return user

    return dependency
