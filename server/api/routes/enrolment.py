"""Enrolment: a new trap exchanges its one-time token for its credentials (no login: the token
is the proof). See trapline/enrolment.py for the contract."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from trapline.enrolment import ENROL_PATH, EnrolmentRequest
from trapline.server.api.deps import SessionDep, SettingsDep
from trapline.server.broker_auth import sync_broker
from trapline.server.fleet import RegistryError, enrol

router = APIRouter(tags=["fleet"])


@router.post(ENROL_PATH.removeprefix("/api/v1"))
def enrol_device(
    body: EnrolmentRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> object:
    try:
        answer = enrol(session, settings, body, str(request.base_url))
    except RegistryError as exc:
        session.rollback()
        raise HTTPException(exc.status, str(exc)) from exc
    session.commit()
    sync_broker(session, settings)  # the trap can connect as soon as it has the answer
    # the answer carries the secrets in clear (its serializers reveal them): sent once, never stored
    return answer.model_dump(mode="json", by_alias=True)
