"""Swapper adapters on generated models with the real I/O contracts: inswapper latent
parity with insightface, I/O contract checks, batching, colour order and scaling, identity
(embedding averaging, no-face errors, latent cache) and the GFPGAN enhancer."""

from __future__ import annotations

import shutil
import types

import numpy as np
import pytest
from conftest import require
from swap_fixtures import (
    CountingSession,
    RecordingOrt,
    cpu_session,
    face_at,
    frame_with_face,
    group_photo,
    reference_module,
    tom_hanks,
)

from streamswap.bench import synthetic
from streamswap.errors import InputError, ModelError, NoFaceError
from streamswap.faces import align
from streamswap.faces.enhancer import GfpganEnhancer
from streamswap.faces.identity import (
    ArcFace,
    LatentCache,
    SourceFace,
    SourceFaces,
    SourceIdentity,
    compute_identity,
    identity_hash,
    l2_normalise,
)
from streamswap.faces.swappers import make_neural_swapper
from streamswap.io.images import read_image

EMB = l2_normalise(np.random.default_rng(0).standard_normal(512))


def _swapper(contract, tmp_path, *, size, batch_dynamic=False, mode="invert", counting=False, **kw):
    model = synthetic.make_swapper_model(
        tmp_path / f"{contract}-{batch_dynamic}-{mode}.onnx", size=size, batch_dynamic=batch_dynamic, mode=mode, **kw
    )
    session = cpu_session(model)
    if counting:
        session = CountingSession(session)
    extra = {}
    if contract in ("simswap", "ghost"):
        extra["converter_session"] = cpu_session(synthetic.make_converter_model(tmp_path / "conv.onnx"))
    swapper = make_neural_swapper(contract, session, name=f"{contract}_test", model_path=model, sha256="abc", **extra)
    return swapper, session, model


def test_inswapper_feeds_what_insightface_feeds(tmp_path):
    inswapper = reference_module("insightface.model_zoo.inswapper")
    img = group_photo()
    require(img is not None, "insightface's t1.jpg")
    swapper, session, model = _swapper("inswapper", tmp_path, size=128, counting=True)
    face = face_at(1.4, 8.0, 420.0, 280.0)
    recorder = RecordingOrt(model)
    reference = inswapper.INSwapper(str(model), session=recorder)
    reference.get(
        img, types.SimpleNamespace(kps=face.kps), types.SimpleNamespace(normed_embedding=EMB), paste_back=False
    )
    swapper.set_identity(SourceIdentity(embedding=EMB, raw=EMB * 20))
    swapper.swap(img.copy(), [face])
    ref_feed, our_feed = recorder.feeds[0], session.feeds[0]
    # The latent: normalise(emb) · emap, normalised again — same as insightface's.
    assert np.allclose(our_feed["source"], ref_feed["source"], atol=1e-6)
    assert np.isclose(np.linalg.norm(our_feed["source"]), 1.0, atol=1e-5)
    assert np.allclose(swapper.emap, reference.emap)
    # The target blob: the same 128 crop, RGB, [0, 1] (crops agree to one grey level).
    assert our_feed["target"].shape == ref_feed["target"].shape == (1, 3, 128, 128)
    assert np.abs(our_feed["target"] - ref_feed["target"]).max() <= 1.0 / 255 + 1e-6


def test_inswapper_fp16_emap_is_read_as_float32(tmp_path):
    emap = np.random.default_rng(5).standard_normal((512, 512)).astype(np.float32) / 22.6
    swapper, _, _ = _swapper("inswapper", tmp_path, size=128, emap=emap, emap_dtype=np.float16)
    assert swapper.emap.dtype == np.float32
    expected = l2_normalise(EMB[None] @ emap.astype(np.float16).astype(np.float32))
    assert np.allclose(swapper.latent(EMB), expected, atol=1e-6)


@pytest.mark.parametrize("contract,size", [("inswapper", 128), ("hyperswap", 256), ("simswap", 256), ("ghost", 256)])
def test_io_contract_check_rejects_a_wrong_model(tmp_path, contract, size):
    bad_models = {
        "names": dict(size=size, input_names=("img", "latent")),
        "size": dict(size=size // 2),
        "latent": dict(size=size, latent=256),
        "channels": dict(size=size, target_channels=4),
    }
    for what, kwargs in bad_models.items():
        model = synthetic.make_swapper_model(tmp_path / f"bad-{what}.onnx", **kwargs)
        extra = {}
        if contract in ("simswap", "ghost"):
            extra["converter_session"] = cpu_session(synthetic.make_converter_model(tmp_path / "c.onnx"))
        with pytest.raises(ModelError, match=f"{contract}_wrong"):
            make_neural_swapper(contract, cpu_session(model), name=f"{contract}_wrong", model_path=model, **extra)
    # ...and accepts the right one.
    _swapper(contract, tmp_path, size=size)


def test_converter_and_inswapper_emap_checks(tmp_path):
    model = synthetic.make_swapper_model(tmp_path / "sim.onnx", size=256)
    converter = synthetic.make_converter_model(tmp_path / "conv.onnx", input_name="x")
    with pytest.raises(ModelError, match="crossface_simswap"):
        make_neural_swapper("simswap", cpu_session(model), name="simswap_256", converter_session=cpu_session(converter))
    with pytest.raises(ModelError, match="crossface_ghost"):
        make_neural_swapper("ghost", cpu_session(model), name="ghost_1_256")
    # inswapper: the last initializer must be the 512×512 emap.
    odd = synthetic.make_swapper_model(
        tmp_path / "odd.onnx", size=128, latent=512, emap=np.zeros((512, 512), np.float32)
    )
    import onnx

    graph = onnx.load(str(odd))
    graph.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.float32), "tail"))
    onnx.save(graph, str(odd))
    with pytest.raises(ModelError, match="not the 512×512 emap"):
        make_neural_swapper("inswapper", cpu_session(odd), name="inswapper_128", model_path=odd)


def test_all_faces_go_through_one_generator_call_when_the_batch_is_dynamic(tmp_path):
    img = group_photo()
    require(img is not None, "insightface's t1.jpg")
    faces = [face_at(1.0, 0.0, 100.0, 100.0), face_at(1.3, 12.0, 500.0, 250.0), face_at(0.9, -8.0, 900.0, 400.0)]
    batched, b_session, _ = _swapper("inswapper", tmp_path, size=128, batch_dynamic=True, counting=True)
    looped, l_session, _ = _swapper("inswapper", tmp_path, size=128, batch_dynamic=False, counting=True)
    assert batched.batched and not looped.batched
    for s in (batched, looped):
        s.set_identity(EMB)
    out_b, out_l = img.copy(), img.copy()
    batched.swap(out_b, faces)
    looped.swap(out_l, faces)
    assert b_session.calls == 1 and b_session.feeds[0]["target"].shape[0] == 3
    assert b_session.feeds[0]["source"].shape == (3, 512)
    assert l_session.calls == 3
    assert np.array_equal(out_b, out_l)  # each face got its own crop back
    for face in faces:
        cx, cy = face.kps[2].astype(int)
        assert np.abs(out_b[cy, cx].astype(int) - (255 - img[cy, cx].astype(int))).max() <= 3
    batched.swap(out_b, [])  # no faces: no call
    assert b_session.calls == 1
    # Every row of the batched source is the latent, and a new identity replaces them all.
    assert np.array_equal(b_session.feeds[0]["source"], np.repeat(batched.latent(EMB), 3, axis=0))
    other = l2_normalise(np.random.default_rng(1).standard_normal(512))
    batched.set_identity(other)
    batched.swap(img.copy(), faces)
    assert np.array_equal(b_session.feeds[1]["source"], np.repeat(batched.latent(other), 3, axis=0))


@pytest.mark.parametrize("contract,size", [("inswapper", 128), ("hyperswap", 256), ("ghost", 256)])
def test_identity_generator_round_trips_the_face(tmp_path, contract, size):
    """An identity generator must give back the target face: the adapter's input
    normalisation and output scaling are inverse, and its colour order is consistent."""
    require(tom_hanks() is not None, "insightface's Tom_Hanks_54745.png")
    swapper, session, _ = _swapper(contract, tmp_path, size=size, mode="identity", counting=True)
    frame, face = frame_with_face((480, 640), 2.0, 5.0, 200.0, 100.0)
    swapper.set_identity(SourceIdentity(embedding=EMB, raw=EMB * 20))
    out = frame.copy()
    swapper.swap(out, [face])
    diff = np.abs(out.astype(int) - frame)
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 24
    # RGB order: the target tensor's first channel is the crop's red channel.
    blob = session.feeds[0]["target"][0]
    crop = align.warp_crop(frame, align.align_matrix(face.kps, swapper.crop.template, size), size)
    red = crop[..., 2].astype(np.float32) / 255
    expected = (red - swapper.crop.mean[0]) / swapper.crop.std[0]
    assert np.abs(blob[0] - expected).max() < 1e-4


def test_simswap_imagenet_normalisation_and_latents(tmp_path):
    sim, sim_session, _ = _swapper("simswap", tmp_path, size=256, counting=True)
    ghost, _, _ = _swapper("ghost", tmp_path, size=256)
    crop = np.zeros((1, 256, 256, 3), np.uint8)
    crop[..., 2] = 255  # pure red in BGR
    blob = sim.to_tensor(crop)
    assert np.allclose(blob[0, 0], (1 - 0.485) / 0.229, atol=1e-5)
    assert np.allclose(blob[0, 1], -0.456 / 0.224, atol=1e-5)
    weight = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32) / np.sqrt(512)
    identity = SourceIdentity(embedding=EMB, raw=EMB * 23.0)
    # SimSwap: normalised embedding through the converter, then L2-normalised.
    assert np.allclose(sim.latent(identity), l2_normalise(EMB[None] @ weight), atol=1e-5)
    # GHOST: the RAW embedding through the converter, not normalised.
    assert np.allclose(ghost.latent(identity), (EMB * 23.0)[None] @ weight, atol=1e-3)
    assert sim.cache_key != ghost.cache_key


class FakeDetector:
    """Returns fixed faces (or none) for any image, counting calls."""

    def __init__(self, faces):
        self.faces = faces
        self.calls = 0

    def detect(self, bgr):
        self.calls += 1
        return list(self.faces(bgr) if callable(self.faces) else self.faces)


def _write(path, image):
    import cv2

    cv2.imwrite(str(path), image)
    return path


def test_source_identity_from_several_images_and_errors(tmp_path):
    require(tom_hanks() is not None, "insightface's Tom_Hanks_54745.png")
    arcface = ArcFace(cpu_session(synthetic.make_arcface_model(tmp_path / "arc.onnx")))
    small = face_at(0.8, 0.0, 20.0, 20.0)
    frame_a, big = frame_with_face((400, 400), 2.0, 0.0, 100.0, 80.0)
    frame_b, _ = frame_with_face((400, 400), 2.0, 0.0, 100.0, 80.0)
    frame_b[..., 0] = 255 - frame_b[..., 0]  # a different-looking second source
    path_a = _write(tmp_path / "a.png", frame_a)
    detector = FakeDetector([small, big])
    one = compute_identity([path_a], detector, arcface)
    raw_big = arcface.embed(frame_a, [big])[0]
    assert np.allclose(one.embedding, l2_normalise(raw_big), atol=1e-5)  # largest face by default
    by_index = compute_identity([path_a], detector, arcface, face_index=0)
    assert np.allclose(by_index.embedding, l2_normalise(arcface.embed(frame_a, [small])[0]), atol=1e-5)
    with pytest.raises(InputError, match="source_face_index is 5"):
        compute_identity([path_a], detector, arcface, face_index=5)
    two = compute_identity([path_a, frame_b], FakeDetector([big]), arcface)
    raw_b = arcface.embed(frame_b, [big])[0]
    expected = l2_normalise(l2_normalise(np.stack([raw_big, raw_b])).mean(axis=0))
    assert np.allclose(two.embedding, expected, atol=1e-5)
    assert np.isclose(np.linalg.norm(two.embedding), 1.0, atol=1e-5)
    assert not np.allclose(two.embedding, one.embedding, atol=1e-3)
    empty = _write(tmp_path / "nobody.png", np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="nobody.png"):
        compute_identity([path_a, empty], FakeDetector(lambda bgr: [big] if bgr.std() > 1 else []), arcface)
    with pytest.raises(ModelError, match="not an ArcFace"):
        ArcFace(cpu_session(synthetic.make_converter_model(tmp_path / "c.onnx")), name="arcface_x")


def test_latent_cache_is_keyed_by_content_and_model(tmp_path):
    """prepare_identity (the one identity contract, run by the identity preparer) reads the
    latent from the cache when these photos met this model file before."""
    require(tom_hanks() is not None, "insightface's Tom_Hanks_54745.png")
    arcface = ArcFace(cpu_session(synthetic.make_arcface_model(tmp_path / "arc.onnx")))
    embeds = []
    embed = arcface.embed
    arcface.embed = lambda bgr, faces: (embeds.append(1), embed(bgr, faces))[1]
    frame, face = frame_with_face((300, 300), 1.5, 0.0, 60.0, 50.0)
    path = _write(tmp_path / "src.png", frame)
    cache = LatentCache.for_models_dir(tmp_path / "models")
    swapper, _, model = _swapper("inswapper", tmp_path, size=128)
    swapper.recognizer, swapper.cache = arcface, cache

    def prepare(target, image_path):
        sources = SourceFaces(
            (SourceFace(read_image(image_path), face, str(image_path)),), identity_hash([image_path], None)
        )
        latent = target.prepare_identity(sources)
        target.set_identity(latent)
        return latent.values

    first = prepare(swapper, path)
    assert len(embeds) == 1 and len(list((tmp_path / "models" / "cache").glob("*.npy"))) == 1
    copy = shutil.copy(path, tmp_path / "renamed.png")
    again = prepare(swapper, copy)
    assert len(embeds) == 1 and np.array_equal(first, again)  # same content: from the cache
    assert np.array_equal(swapper._latent, again)
    other_model = make_neural_swapper(
        "inswapper", cpu_session(model), name="x", model_path=model, sha256="other", recognizer=arcface, cache=cache
    )
    prepare(other_model, path)
    assert len(embeds) == 2  # another model file: recomputed
    frame[0, 0] = 0
    _write(path, frame)
    prepare(swapper, path)
    assert len(embeds) == 3  # changed content: recomputed


def test_neural_swapper_without_recognizer_is_a_clear_error(tmp_path):
    swapper, _, _ = _swapper("inswapper", tmp_path, size=128)
    frame, face = frame_with_face((300, 300), 1.5, 0.0, 60.0, 50.0)
    with pytest.raises(InputError, match="faces.recognizer.model"):
        swapper.prepare_identity(SourceFaces((SourceFace(frame, face, "a.png"),)))


def test_gfpgan_enhancer_changes_the_face_and_checks_its_contract(tmp_path):
    require(tom_hanks() is not None, "insightface's Tom_Hanks_54745.png")
    session = CountingSession(cpu_session(synthetic.make_enhancer_model(tmp_path / "gfpgan.onnx")))
    enhancer = GfpganEnhancer(session)
    frame, face = frame_with_face((480, 640), 2.0, 0.0, 220.0, 120.0)
    out = frame.copy()
    enhancer.enhance(out, [face, face_at(1.0, 0.0, 500.0, 300.0)])
    assert session.calls == 2  # fixed batch of 1: a loop
    assert session.feeds[0]["input"].shape == (1, 3, 512, 512)
    cx, cy = face.kps[2].astype(int)
    # Neg generator: enhanced = 255 − x, blended 80/20 → 0.8·(255 − x) + 0.2·x.
    expected = 0.8 * (255 - frame[cy, cx].astype(float)) + 0.2 * frame[cy, cx]
    assert np.abs(out[cy, cx] - expected).max() <= 6
    assert np.array_equal(out[:, :150], frame[:, :150])
    bad = synthetic.make_swapper_model(tmp_path / "bad.onnx", size=512)
    with pytest.raises(ModelError, match="gfpgan_bad"):
        GfpganEnhancer(cpu_session(bad), name="gfpgan_bad")


def test_swap_of_faces_at_the_frame_border(tmp_path):
    swapper, session, _ = _swapper("hyperswap", tmp_path, size=256, batch_dynamic=True, counting=True)
    swapper.set_identity(EMB)
    frame = np.full((720, 1280, 3), 100, np.uint8)
    faces = [
        face_at(2.0, 0.0, -80.0, 300.0),
        face_at(2.0, 30.0, 1200.0, -60.0),
        face_at(1.5, 0.0, 5000.0, 5000.0),
    ]  # the last one is entirely outside
    out = frame.copy()
    swapper.swap(out, faces)
    assert session.calls == 1
    changed = (out != frame).any(axis=2)
    left, top_right = changed[:, :200], changed[:200, 1000:]
    assert left.sum() > 1000 and top_right.sum() > 1000
    assert changed[:, :200].any(axis=0)[0]  # reaches the left edge
    assert not changed[500:, 300:].any()  # nothing elsewhere
