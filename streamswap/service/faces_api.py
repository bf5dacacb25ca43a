"""Control API routes for who is swapped and into whom (faces.select / faces.map), live:

    GET    /faces/selection   the current rules: mode, order, index, threshold, map, unmatched
    POST   /faces/selection   {"mode": "one", "order": "large-small", "index": 0, "threshold": 0.4,
                              "unmatched": "keep", "reference": ["/photos/alice.jpg"]} (any subset)
    POST   /faces/map         {"reference": "/photos/alice.jpg", "source": "/photos/star1.jpg"}
    DELETE /faces/map         {"reference": "/photos/alice.jpg"}
    POST   /faces/photos      a photo as the body (image/jpeg, image/png, ...) -> {"photo": "upload:3"}

Photos are named by path on the daemon's machine (as in the config file) or by the name an
upload got ("upload:3"; the last 16 uploads are kept in memory, checked like /source
uploads); they are embedded and prepared in a worker thread, and the stages switch at a
frame boundary.
Bad values and photos without a face are 4xx answers with the reason; the stream goes on.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from streamswap.errors import Busy, ConfigError, InputError, NoFaceError, StreamswapError
from streamswap.service.api import (
    IMAGE_TYPES,
    Refused,
    api_context,
    json_object,
    require_auth,
    require_same_origin,
    upload_image,
)
from streamswap.service.control import PeopleControl

_ERR = {"description": "refused", "content": {"application/json": {"example": {"error": "what was wrong"}}}}
router = APIRouter(tags=["faces"], dependencies=[Depends(require_auth)])

_SELECTION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "mode": str,
    "order": str,
    "index": int,
    "threshold": (int, float),
    "unmatched": str,
    "reference": list,
}


UPLOAD_PREFIX = "upload:"
KEPT_UPLOADS = 16


class PhotoShelf:
    """The last few uploaded photos (decoded), by name; kept on the app, not globally."""

    def __init__(self, size: int = KEPT_UPLOADS) -> None:
        self.size = size
        self._photos: OrderedDict[str, Any] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # uploads store from worker threads

    def put(self, image: Any) -> str:
        with self._lock:
            name = f"{UPLOAD_PREFIX}{next(self._ids)}"
            self._photos[name] = image
            while len(self._photos) > self.size:
                self._photos.popitem(last=False)
            return name

    def get(self, name: str) -> Any:
        with self._lock:
            image = self._photos.get(name)
        if image is None:
            raise Refused(
                400,
                f"{name}: no such upload (the last {self.size} are kept); upload the photo "
                "again with POST /faces/photos",
            )
        return image


def _shelf(request: Request) -> PhotoShelf:
    state = request.app.state
    if getattr(state, "face_photos", None) is None:
        state.face_photos = PhotoShelf()
    return state.face_photos


def _photo(request: Request, name: str) -> Any:
    """An upload's image for "upload:N", else the path as given."""
    return _shelf(request).get(name) if name.startswith(UPLOAD_PREFIX) else name


def _people(request: Request) -> PeopleControl:
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
    except Busy as exc:
        raise Refused(503, str(exc), {"Retry-After": "1"}) from None
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


@router.post(
    "/faces/selection",
    dependencies=[Depends(require_same_origin)],
    responses={400: _ERR, 409: _ERR, 415: _ERR, 422: _ERR},
)
async def set_selection(request: Request) -> JSONResponse:
    """Change the selection: any of mode (all|one|reference), order, index, threshold,
    unmatched (keep|default-source), reference (photo paths)."""
    body = await json_object(request)
    unknown = sorted(set(body) - set(_SELECTION_FIELDS))
    if unknown or not body:
        raise Refused(
            400,
            f"unknown field(s) {', '.join(unknown)[:200]}; give any of {', '.join(_SELECTION_FIELDS)}"
            if unknown
            else f"give any of {', '.join(_SELECTION_FIELDS)}",
        )
    if "reference" in body:
        body["reference"] = [_photo(request, p) for p in _path_list(body["reference"], "reference")]
    for key, kind in _SELECTION_FIELDS.items():
        if key in body and (not isinstance(body[key], kind) or isinstance(body[key], bool)):
            raise Refused(400, f"{key}: wrong type ({type(body[key]).__name__})")
    state = await _call(request, _people(request).set_selection, **body)
    return JSONResponse({"ok": True, **state})


@router.post(
    "/faces/map", dependencies=[Depends(require_same_origin)], responses={400: _ERR, 409: _ERR, 415: _ERR, 422: _ERR}
)
async def add_mapping(request: Request) -> JSONResponse:
    """Map the person in `reference` (photo path) to the identity in `source` (photo path)."""
    body = await json_object(request)
    if set(body) != {"reference", "source"} or not all(isinstance(body[k], str) and body[k] for k in body):
        raise Refused(
            400,
            'expected {"reference": "PHOTO", "source": "PHOTO"} (paths on the daemon\'s machine '
            "or names from POST /faces/photos)",
        )
    reference, source = body["reference"], body["source"]
    state = await _call(
        request,
        _people(request).add_mapping,
        _photo(request, reference),
        _photo(request, source),
        names=(reference, source),
    )
    return JSONResponse({"ok": True, **state})


@router.post(
    "/faces/photos",
    dependencies=[Depends(require_same_origin)],
    responses={400: _ERR, 413: _ERR, 415: _ERR},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        }
    },
)
async def upload_photo(request: Request) -> JSONResponse:
    """Upload a photo (reference or source) to name in the other /faces calls."""
    shelf = _shelf(request)
    image, name = await upload_image(request, shelf.put, "faces/photos")
    return JSONResponse({"ok": True, "photo": name, "width": image.shape[1], "height": image.shape[0]})


@router.delete("/faces/map", dependencies=[Depends(require_same_origin)], responses={400: _ERR, 409: _ERR})
async def remove_mapping(request: Request) -> JSONResponse:
    """Remove the mapping of `reference` (as listed by GET /faces/selection)."""
    body = await json_object(request)
    if set(body) != {"reference"} or not isinstance(body["reference"], str):
        raise Refused(400, 'expected {"reference": "PHOTO"} as listed by GET /faces/selection')
    state = await _call(request, _people(request).remove_mapping, body["reference"])
    return JSONResponse({"ok": True, **state})
