"""Control API routes for who is swapped and into whom (faces.select / faces.map), live:

    GET    /faces/selection   the current rules: mode, order, index, threshold, map, unmatched
    POST   /faces/selection   {"mode": "one", "order": "large-small", "index": 0, "threshold": 0.4,
                              "unmatched": "keep", "reference": ["/photos/alice.jpg"]} (any subset)
    POST   /faces/map         {"reference": "/photos/alice.jpg", "source": "/photos/star1.jpg"}
    DELETE /faces/map         {"reference": "/photos/alice.jpg"}

Photos are named by path on the daemon's machine (as in the config file); they are read,
embedded and prepared in a worker thread, and the stages switch at a frame boundary.
Bad values and photos without a face are 4xx answers with the reason; the stream goes on.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from streamswap.errors import ConfigError, InputError, NoFaceError, StreamswapError
from streamswap.service.api import Refused, api_context, json_object, require_auth, require_same_origin

_ERR = {"description": "refused", "content": {"application/json": {"example": {"error": "what was wrong"}}}}
router = APIRouter(tags=["faces"], dependencies=[Depends(require_auth)])

_SELECTION_FIELDS = {"mode": str, "order": str, "index": int, "threshold": (int, float), "unmatched": str,
                     "reference": list}


def _people(request: Request) -> Any:
    people = api_context(request).control.people()
    if people is None:
        raise Refused(409, "the face stages are not loaded yet (or this pipeline has none); retry shortly")
    return people


async def _call(request: Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await api_context(request).call(lambda: fn(*args, **kwargs))
    except NoFaceError as exc:
        raise Refused(422, str(exc)) from None
    except (ConfigError, InputError) as exc:
        raise Refused(400, str(exc)) from None
    except StreamswapError as exc:
        raise Refused(409, str(exc)) from None


def _path_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise Refused(400, f"{key}: expected a list of photo paths, got {str(value)[:80]!r}")
    return value


@router.get("/faces/selection")
async def get_selection(request: Request) -> JSONResponse:
    """Which faces are swapped and the person → source map."""
    people = _people(request)
    return JSONResponse(people.rules.describe())


@router.post("/faces/selection", dependencies=[Depends(require_same_origin)],
             responses={400: _ERR, 409: _ERR, 415: _ERR, 422: _ERR})
async def set_selection(request: Request) -> JSONResponse:
    """Change the selection: any of mode (all|one|reference), order, index, threshold,
    unmatched (keep|default-source), reference (photo paths)."""
    body = await json_object(request)
    unknown = sorted(set(body) - set(_SELECTION_FIELDS))
    if unknown or not body:
        raise Refused(400, f"unknown field(s) {', '.join(unknown)[:200]}; give any of {', '.join(_SELECTION_FIELDS)}"
                      if unknown else f"give any of {', '.join(_SELECTION_FIELDS)}")
    if "reference" in body:
        body["reference"] = _path_list(body["reference"], "reference")
    for key, kind in _SELECTION_FIELDS.items():
        if key in body and (not isinstance(body[key], kind) or isinstance(body[key], bool)):
            raise Refused(400, f"{key}: wrong type ({type(body[key]).__name__})")
    state = await _call(request, _people(request).set_selection, **body)
    return JSONResponse({"ok": True, **state})


@router.post("/faces/map", dependencies=[Depends(require_same_origin)],
             responses={400: _ERR, 409: _ERR, 415: _ERR, 422: _ERR})
async def add_mapping(request: Request) -> JSONResponse:
    """Map the person in `reference` (photo path) to the identity in `source` (photo path)."""
    body = await json_object(request)
    if set(body) != {"reference", "source"} or not all(isinstance(body[k], str) and body[k] for k in body):
        raise Refused(400, 'expected {"reference": "PHOTO", "source": "PHOTO"} (paths on the daemon\'s machine)')
    state = await _call(request, _people(request).add_mapping, body["reference"], body["source"])
    return JSONResponse({"ok": True, **state})


@router.delete("/faces/map", dependencies=[Depends(require_same_origin)], responses={400: _ERR, 409: _ERR})
async def remove_mapping(request: Request) -> JSONResponse:
    """Remove the mapping of `reference` (as listed by GET /faces/selection)."""
    body = await json_object(request)
    if set(body) != {"reference"} or not isinstance(body["reference"], str):
        raise Refused(400, 'expected {"reference": "PHOTO"} as listed by GET /faces/selection')
    state = await _call(request, _people(request).remove_mapping, body["reference"])
    return JSONResponse({"ok": True, **state})
