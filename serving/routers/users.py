"""GET /v1/users/{user_id}/history: what this server knows of a user's recent clicks (client
token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from serving.bounds import MAX_ID_CHARS, PRINTABLE
from serving.deps import ClientAuth, ServiceDep
from serving.schemas import ErrorResponse

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[ClientAuth])


class HistoryItem(BaseModel):
    item_id: str
    ts_us: int
    ordered: bool


class UserHistory(BaseModel):
    user_id: str
    history: list[HistoryItem]


UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE)]


@router.get(
    "/{user_id}/history",
    response_model=UserHistory,
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    summary="A user's stored history",
)
def history(user_id: UserId, service: ServiceDep) -> UserHistory:
    """The clicks the server would use for this user's next request, oldest first."""
    seq = service.user_history(user_id)
    return UserHistory(
        user_id=user_id,
        history=[
            HistoryItem(item_id=str(i), ts_us=int(t), ordered=bool(o))
            for i, t, o in zip(seq.item_id, seq.t_us, seq.ordered, strict=True)
        ],
    )
