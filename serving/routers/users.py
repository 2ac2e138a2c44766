"""GET /v1/users/{user_id}/history: what this server knows of a user's recent clicks."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from serving.deps import get_service
from serving.service import Service

router = APIRouter(tags=["users"])


class HistoryItem(BaseModel):
    item_id: str
    ts_us: int
    ordered: bool


class UserHistory(BaseModel):
    user_id: str
    history: list[HistoryItem]


@router.get(
    "/v1/users/{user_id}/history", response_model=UserHistory, summary="A user's stored history"
)
def history(user_id: str, service: Service = Depends(get_service)) -> UserHistory:  # noqa: B008
    """The clicks the server would use for this user's next request, oldest first."""
    seq = service.user_history(user_id)
    return UserHistory(
        user_id=user_id,
        history=[
            HistoryItem(item_id=str(i), ts_us=int(t), ordered=bool(o))
            for i, t, o in zip(seq.item_id, seq.t_us, seq.ordered, strict=True)
        ],
    )
