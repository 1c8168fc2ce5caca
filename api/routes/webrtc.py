"""WebRTC signalling: a browser's SDP offer becomes a stream of kind "webrtc" (see ``api.rtc``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.auth import TenantDep
from api.deps import RuntimeDep, SettingsDep
from api.rtc import Peers
from api.schemas import WebRtcAnswer, WebRtcConfigPublic, WebRtcOffer

router = APIRouter()


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


@router.post("/v1/webrtc/offer", response_model=WebRtcAnswer)
async def offer(body: WebRtcOffer, request: Request, tenant: TenantDep) -> Any:
    """Answer a browser's SDP offer (vanilla ICE: its candidates included) and start a stream of its video.

    The stream ends when the browser hangs up, sends no frame for ``webrtc_watchdog_s``, or on
    ``DELETE /v1/streams/{stream_id}``.
    """
    answer = await _peers(request).answer(
        body.sdp, tenant=tenant, fps=body.fps, budget=body.budget, name=body.name
    )
    return WebRtcAnswer(sdp=answer.sdp, type="answer", stream_id=answer.stream_id)


@router.get("/v1/webrtc/config", response_model=WebRtcConfigPublic, response_model_exclude_unset=True)
def config(settings: SettingsDep, rt: RuntimeDep, request: Request, _: TenantDep) -> dict[str, Any]:
    """What a browser needs to connect: the ICE servers, and the limits it will meet."""
    return {
        "ice_servers": [s.model_dump(exclude_none=True) for s in settings.webrtc_ice_servers],
        "max_peers": settings.webrtc_max_peers,
        "peers": len(_peers(request)),
        "watchdog_s": settings.webrtc_watchdog_s,
        "fps": settings.fps,
        "budget": rt.memory_defaults().budget,
    }
