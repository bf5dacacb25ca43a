"""Face selection and person → source mapping as pure logic: ordering, one/all/reference,
mappings with unmatched keep/default-source, recognition once per track, identity kept
through a short occlusion. (Real photos: test_selection_photos.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from streamswap.errors import ConfigError
from streamswap.faces.selection import DEFAULT_SOURCE, Mapping, SelectionRules, Selector, order_faces
from streamswap.faces.types import Face

FRAME = np.zeros((10, 10, 3), np.uint8)
PEOPLE = {name: np.eye(512, dtype=np.float32)[i] for i, name in enumerate(("ann", "bob", "cy"))}


def face(x: float, y: float, size: float, who: str, track: int, score: float = 0.9) -> Face:
    f = Face(
        box=np.array([x, y, x + size, y + size], np.float32),
        score=score,
        kps=np.zeros((5, 2), np.float32),
        track_id=track,
    )
    f.extra["who"] = np.array([list(PEOPLE).index(who)])
    return f


class Recognizer:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, frame: np.ndarray, faces) -> np.ndarray:
        self.seen.extend(f.track_id for f in faces)
        return np.stack([PEOPLE[list(PEOPLE)[int(f.extra["who"][0])]] * 3.0 for f in faces])


SCENE = [face(300, 10, 50, "ann", 1, 0.7), face(10, 200, 120, "bob", 2, 0.95), face(150, 100, 80, "cy", 3, 0.8)]


@pytest.mark.parametrize(
    "order, expected",
    [
        ("left-right", ["bob", "cy", "ann"]),
        ("right-left", ["ann", "cy", "bob"]),
        ("top-bottom", ["ann", "cy", "bob"]),
        ("bottom-top", ["bob", "cy", "ann"]),
        ("large-small", ["bob", "cy", "ann"]),
        ("small-large", ["ann", "cy", "bob"]),
        ("best-score", ["bob", "cy", "ann"]),
    ],
)
def test_orders(order: str, expected: list[str]) -> None:
    names = [list(PEOPLE)[int(f.extra["who"][0])] for f in order_faces(SCENE, order)]
    assert names == expected


def test_one_picks_by_order_and_index_and_all_takes_everyone() -> None:
    sel = Selector(SelectionRules(mode="one", order="large-small", index=1))
    assert [f.track_id for f, _ in sel.plan(FRAME, SCENE, 0)] == [3]
    sel.rules = SelectionRules(mode="one", order="left-right", index=5)  # fewer faces: nobody
    assert sel.plan(FRAME, SCENE, 0) == []
    sel.rules = SelectionRules()
    assert sorted(f.track_id for f, s in sel.plan(FRAME, SCENE, 0) if s == DEFAULT_SOURCE) == [1, 2, 3]


def test_reference_swaps_only_lookalikes_and_needs_a_recognizer() -> None:
    rules = SelectionRules(mode="reference", references=PEOPLE["cy"][None], threshold=0.5)
    assert [f.track_id for f, _ in Selector(rules, Recognizer()).plan(FRAME, SCENE, 0)] == [3]
    with pytest.raises(ConfigError, match="recognizer"):
        Selector(rules).plan(FRAME, SCENE, 0)
    with pytest.raises(ConfigError, match="reference photo"):
        SelectionRules(mode="reference")


def test_mapping_with_unmatched_keep_and_default_source() -> None:
    rules = SelectionRules(
        mappings=(
            Mapping("ann.jpg", PEOPLE["ann"][None], "star1.jpg"),
            Mapping("bob.jpg", PEOPLE["bob"][None], "star2.jpg"),
        )
    )
    plan = {f.track_id: s for f, s in Selector(rules, Recognizer()).plan(FRAME, SCENE, 0)}
    assert plan == {1: "star1.jpg", 2: "star2.jpg"}  # cy is nobody's: kept
    rules = rules.without_mapping("bob.jpg").with_mapping(Mapping("cy.jpg", PEOPLE["cy"][None], "star3.jpg"))
    plan = {
        f.track_id: s
        for f, s in Selector(SelectionRules(mappings=rules.mappings, unmatched="default-source"), Recognizer()).plan(
            FRAME, SCENE, 0
        )
    }
    assert plan == {1: "star1.jpg", 2: DEFAULT_SOURCE, 3: "star3.jpg"}


def test_recognised_once_per_track_then_every_n_frames() -> None:
    rec = Recognizer()
    sel = Selector(SelectionRules(mode="reference", references=PEOPLE["ann"][None]), rec, recognize_every=10)
    for index in range(25):
        sel.plan(FRAME, SCENE, index)
    assert sorted(rec.seen) == [1, 1, 1, 2, 2, 2, 3, 3, 3]  # frames 0, 10, 20
    assert sel.recognitions == 9


def test_identity_kept_through_a_short_occlusion() -> None:
    rec = Recognizer()
    mapping = Mapping("ann.jpg", PEOPLE["ann"][None], "star1.jpg")
    sel = Selector(SelectionRules(mappings=(mapping,)), rec, recognize_every=100, hold_frames=10)
    ann = face(300, 10, 50, "ann", 1)
    assert sel.plan(FRAME, [ann], 0)[0][1] == "star1.jpg"
    sel.plan(FRAME, [], 1)  # occluded: the tracker lost her
    # Back 3 frames later under a new track id, half hidden: recognition would say "bob".
    back = face(303, 12, 50, "bob", 7)
    assert sel.plan(FRAME, [back], 4)[0][1] == "star1.jpg"
    assert rec.seen == [1]
    # Far away and long after: a new person, recognised.
    sel.plan(FRAME, [], 30)
    assert sel.plan(FRAME, [face(10, 300, 50, "bob", 8)], 31) == []
    assert rec.seen == [1, 8]


def test_rules_describe_for_the_api() -> None:
    rules = SelectionRules(mode="one", index=2, mappings=(Mapping("a.jpg", PEOPLE["ann"][None], "s.jpg"),))
    assert rules.describe()["map"] == [{"reference": "a.jpg", "source": "s.jpg"}]
    assert rules.needs_recognizer and not SelectionRules().needs_recognizer
