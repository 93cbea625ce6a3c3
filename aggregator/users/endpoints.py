"""``GET /v1/me``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..db.models import User
from .auth import current_user

router = APIRouter(tags=["users"])


@router.get("/v1/me")
def me(user: User = Depends(current_user)) -> dict[str, object]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "practice": user.practice_ods,
        "group": user.group,
    }
