"""Live face selection and person → source mapping through the control API (in-process
daemon, fake runtime): the endpoints change the stages' rules, bad requests are 4xx with
a reason and the stream goes on."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_api import Running

from streamswap.faces.people import People
from streamswap.faces.types import Face


class _Recognizer:
    def embed(self, bgr, faces):
        rng = np.random.default_rng(int(bgr.mean() * 1000))
        return rng.normal(size=(len(faces), 512)).astype(np.float32)


def _detect(bgr):
    if float(bgr.std()) < 1.0:
        return []
    return [Face(box=np.array([0, 0, 10, 10], np.float32), score=0.9, kps=np.zeros((5, 2), np.float32))]


@pytest.fixture
def served(tmp_path):
    r = Running(tmp_path)
    r.stages.people = People(_detect, lambda images, names: ("identity", names[0]), _Recognizer())
    r.wait_ready()
    photos = {}
    rng = np.random.default_rng(0)
    for name in ("alice", "star"):
        photos[name] = tmp_path / f"{name}.png"
        cv2.imwrite(str(photos[name]), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    photos["blank"] = tmp_path / "blank.png"
    cv2.imwrite(str(photos["blank"]), np.full((40, 40, 3), 128, np.uint8))
    yield r, {k: str(v) for k, v in photos.items()}
    r.stop()


def _post(r, method, path, body):
    return r.client.json(method, path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def test_selection_changes_live(served) -> None:
    r, photos = served
    code, state = r.client.json("GET", "/faces/selection")
    assert code == 200 and state["mode"] == "all" and state["map"] == []
    code, state = _post(r, "POST", "/faces/selection", {"mode": "one", "order": "large-small", "index": 1})
    assert code == 200 and (state["mode"], state["order"], state["index"]) == ("one", "large-small", 1)
    assert r.stages.people.rules.mode == "one"
    code, state = _post(
        r, "POST", "/faces/selection", {"mode": "reference", "reference": [photos["alice"]], "threshold": 0.5}
    )
    assert code == 200 and state["references"] == 1 and state["threshold"] == 0.5
    r.assert_streaming()


def test_bad_selection_requests_are_refused(served) -> None:
    r, photos = served
    for body, code, words in (
        ({"mode": "some"}, 400, "faces.select.mode: must be one of all, one, reference"),
        ({"index": -1}, 400, "must be ≥ 0"),
        ({"index": "2"}, 400, "index: wrong type"),
        ({"colour": 1}, 400, "unknown field(s) colour"),
        ({}, 400, "give any of"),
        ({"mode": "reference", "reference": [photos["blank"]]}, 422, "no face found"),
        ({"reference": "alice.jpg"}, 400, "expected a list of photo paths"),
    ):
        got, answer = _post(r, "POST", "/faces/selection", body)
        assert got == code and words in answer["error"], (body, got, answer)
    assert r.stages.people.rules.mode == "all"  # nothing half-applied
    r.assert_streaming()


def test_map_add_and_remove(served) -> None:
    r, photos = served
    code, state = _post(r, "POST", "/faces/map", {"reference": photos["alice"], "source": photos["star"]})
    assert code == 200 and state["map"] == [{"reference": photos["alice"], "source": photos["star"]}]
    assert r.stages.people.identities == {photos["star"]: ("identity", photos["star"])}
    code, answer = _post(r, "POST", "/faces/map", {"reference": photos["blank"], "source": photos["star"]})
    assert code == 422 and "no face found" in answer["error"]
    code, answer = _post(r, "POST", "/faces/map", {"reference": "/nowhere/x.jpg", "source": photos["star"]})
    assert code == 400 and "/nowhere/x.jpg" in answer["error"]
    code, answer = _post(r, "DELETE", "/faces/map", {"reference": "bob.jpg"})
    assert code == 400 and "no mapping for reference 'bob.jpg'" in answer["error"]
    code, state = _post(r, "DELETE", "/faces/map", {"reference": photos["alice"]})
    assert code == 200 and state["map"] == [] and r.stages.people.identities == {}
    r.assert_streaming()


def test_stages_without_people_answer_409(tmp_path) -> None:
    r = Running(tmp_path)
    r.wait_ready()
    try:
        code, answer = r.client.json("GET", "/faces/selection")
        assert code == 409 and "not loaded" in answer["error"]
    finally:
        r.stop()


def test_uploaded_photos_can_be_named(served) -> None:
    """A browser cannot name files on the daemon's machine: photos uploaded to /faces/photos
    are named "upload:N" in the other calls."""
    r, photos = served
    names = []
    for key in ("alice", "star"):
        code, _, data = r.client.request(
            "POST", "/faces/photos", body=Path(photos[key]).read_bytes(), headers={"Content-Type": "image/png"}
        )
        answer = json.loads(data)
        assert code == 200 and answer["photo"].startswith("upload:") and answer["width"] == 40
        names.append(answer["photo"])
    code, state = _post(r, "POST", "/faces/map", {"reference": names[0], "source": names[1]})
    assert code == 200 and state["map"] == [{"reference": names[0], "source": names[1]}]
    assert list(r.stages.people.identities) == [names[1]]
    code, state = _post(r, "POST", "/faces/selection", {"mode": "reference", "reference": [names[0]]})
    assert code == 200 and state["references"] == 1
    code, answer = _post(r, "POST", "/faces/map", {"reference": "upload:999", "source": names[1]})
    assert code == 400 and "no such upload" in answer["error"]
    code, _, data = r.client.request(
        "POST", "/faces/photos", body=b"not an image", headers={"Content-Type": "text/plain"}
    )
    assert code == 415
    r.assert_streaming()
