"""The GPU frame path of the face stages: a frame crosses the bus once each way.

`DeviceFrames` is the pipeline's slot allocator on the GPU path: each frame slot is pinned
host memory (the decoder writes it, the encoder reads it) with a device frame beside it, all
allocated when the pipeline starts. The detect stage uploads a slot once, on its stream, and
records the slot's event; the swap stage's stream waits on that event (on the GPU: the host
never waits for the detector), swaps in place in the device frame, and downloads the result
once into the pinned slot. With mapped slots (Jetson, where CPU and GPU share memory) the
device reads the pinned slot in place and nothing is copied.

The device twins of the host adapters run the same steps with `streamswap.ops.cuda` kernels
on the stage's stream; only small things cross to the host (the detector's raw outputs for
decoding, 5-point matrices going the other way):
- `DeviceDetector`: letterbox + normalise straight into the engine's input, run, fetch the
  outputs, decode on the host with the host adapter's own decoder.
- `DeviceLandmarker`: every face's FaceMesh crop warped and normalised straight into the
  engine's input (one launch each for all faces), one engine call, the small outputs
  (mesh + presence) decoded on the host with the host FaceMesh's own decoder.
- `DeviceSwapper`: every face's aligned crop warped and normalised into the generator's
  input in one launch, one generator call for all faces, the crops converted back, the
  optional mouth mask (polygon fill + Gaussian blur, cut out of the feathered mask per
  face) and LAB colour transfer (towards the aligned target crop), and the paste, all on
  the device; only the per-face matrices and mouth polygons go up.
Buffers are sized for `max_faces` when an adapter is made; nothing is allocated per frame.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.align import align_matrix, invert_affine, source_roi
from streamswap.faces.detectors.common import DecodesOnDevice
from streamswap.faces.enhancer import IN_BIAS, IN_SCALE, OUT_OFFSET, OUT_SCALE
from streamswap.faces.landmarks import INPUT_BIAS, INPUT_SCALE, FaceMesh, Landmarker, decode_mesh, mesh_crops
from streamswap.faces.masks import FaceMasks
from streamswap.faces.mesh_topology import NUM_LANDMARKS
from streamswap.faces.paste import mouth_polygon
from streamswap.faces.stages import DetectStage, SwapStage
from streamswap.faces.swappers.base import NeuralSwapper
from streamswap.faces.types import Face
from streamswap.inference.base import DeviceSession
from streamswap.inference.cuda import Cuda, DeviceArray, Event, PinnedAllocator, Stream
from streamswap.logs import kv
from streamswap.ops.cpu import blur_sigma
from streamswap.pipeline.frame_queue import FrameItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceFrame:
    """One slot's frame on the device: (H, W, 3) uint8 BGR."""

    slot: int  # the slot's host address (its identity)
    array: DeviceArray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape


class DeviceFrames:
    """Frame slots in pinned host memory, each with its device frame and events; the
    pipeline's slot `Allocator` on the GPU path. Slots are known by their host array (the
    pipeline hands stages `pool[slot]`), so a later pipeline's new slots just work; a
    slot's device memory is freed when its host array is gone."""

    def __init__(self, cuda: Cuda, mapped: bool = False) -> None:
        self.cuda = cuda
        self.mapped = mapped
        self._host = PinnedAllocator(cuda, mapped=mapped)
        self._slots: dict[int, _Slot] = {}  # host array address -> its device side
        self.bytes_up = 0  # host → device bytes copied so far (bench: bytes per frame)
        self.bytes_down = 0

    # -- pipeline.slots.Allocator ---------------------------------------------------------
    def alloc(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        pinned = self._host.alloc_buffer(shape, dtype)
        host = pinned.array(shape, dtype)
        if self.mapped:  # the device reads the pinned slot itself
            device = DeviceArray(pinned.device_ptr, shape, dtype, pinned)
        else:
            device = self.cuda.device_buffer(host.nbytes).array(shape, dtype)
        key = host.ctypes.data
        self._slots[key] = _Slot(device, self.cuda.event(), self.cuda.event())
        weakref.finalize(host, self._forget, key)
        return host

    def _forget(self, key: int) -> None:
        """A slot's host array is gone (its pipeline was replaced): free its device side."""
        slot = self._slots.pop(key, None)
        if slot is not None:
            slot.uploaded.close()
            slot.downloaded.close()

    def bind_thread(self) -> None:
        """Every pipeline thread makes the slots' device current first."""
        self.cuda.bind_thread()

    def close(self) -> None:
        for slot in self._slots.values():
            slot.uploaded.close()
            slot.downloaded.close()
        self._slots.clear()
        self._host.close()

    def holds(self, host: np.ndarray) -> bool:
        return host.ctypes.data in self._slots

    # -- the frame path -------------------------------------------------------------------
    def upload(self, host: np.ndarray, stream: Stream) -> DeviceFrame:
        """Queue the pinned slot `host` to its device frame on `stream` (the detect
        stage's) and mark it with the slot's upload event."""
        slot = self._slots[host.ctypes.data]
        if not self.mapped:
            self.cuda.copy_htod_async(slot.device.ptr, host, stream)
            self.bytes_up += slot.device.nbytes
        slot.uploaded.record(stream)
        return DeviceFrame(host.ctypes.data, slot.device)

    def frame(self, host: np.ndarray, stream: Stream) -> DeviceFrame:
        """The device frame of slot `host` for a later stage: `stream` waits (on the GPU)
        until its upload is done."""
        slot = self._slots[host.ctypes.data]
        stream.wait(slot.uploaded)
        return DeviceFrame(host.ctypes.data, slot.device)

    def download(self, host: np.ndarray, stream: Stream) -> None:
        """Bring the device frame back into the pinned slot; returns when it is there (the
        host waits for this copy only, so the encoder reads the finished frame)."""
        slot = self._slots[host.ctypes.data]
        if not self.mapped:
            self.cuda.copy_dtoh_async(host, slot.device.ptr, stream)
            self.bytes_down += slot.device.nbytes
        slot.downloaded.record(stream)
        slot.downloaded.synchronize()


@dataclass
class _Slot:
    device: DeviceArray
    uploaded: Event
    downloaded: Event


def _float_io(session: DeviceSession, names: Sequence[str], what: str) -> None:
    for info in [*session.inputs, *session.outputs]:
        if info.name in names and np.dtype(info.dtype) != np.float32:
            raise ModelError(
                f"{what}: the GPU frame path feeds float32 tensors, but {info.name!r} is {np.dtype(info.dtype)}; "
                "use the model's fp32-I/O file (streamswap builds fp16 engines with fp32 I/O)"
            )


class DeviceDetector:
    """A letterbox detector on the device; `detector` is the host adapter (its input
    geometry, normalisation and decoder), `session` its network on the device (a TensorRT
    engine, or ONNX Runtime on its CUDA/TensorRT provider)."""

    def __init__(self, detector: DecodesOnDevice, session: DeviceSession) -> None:
        self.detector = detector
        self.session = session
        self.input_name = detector.input_name
        label = detector.label
        _float_io(session, [self.input_name], label)
        size = detector.input.size
        self.input_shape = (1, 3, size, size)
        largest = session.max_shape(self.input_name)  # also: the session's buffers exist from now on
        if len(largest) != 4 or any(want > have for want, have in zip(self.input_shape, largest)):
            raise ModelError(
                f"{label}: the GPU frame path feeds {self.input_shape}, but the network's input "
                f"{self.input_name!r} takes at most {largest}; set faces.detector.size to the model's input side"
            )

    def detect(self, frame: DeviceFrame, stream: Stream) -> list[Face]:
        from streamswap.ops import cuda as ops

        spec = self.detector.input
        target = self.session.device_input(self.input_name).view(self.input_shape)
        scale = ops.letterbox(frame.array, target, float(spec.mean), float(spec.scale), spec.rgb, stream=stream)
        self.session.enqueue({self.input_name: self.input_shape}, stream)
        outputs = self.session.fetch(stream).result()  # small: scores, boxes, key points
        return self.detector.decode_outputs(outputs, scale, frame.shape)


class DeviceLandmarker:
    """FaceMesh on the device; `landmarker` is the host adapter (crop geometry, output
    names, the decoder), `session` its engine. The crops are warped and normalised with
    the same ops as the host adapter's CPU twins (`warp_crops` + `crops_to_tensor`, two
    launches for all faces), so the engine sees the host's input within a grey level."""

    def __init__(self, landmarker: FaceMesh, session: DeviceSession, cuda: Cuda, max_faces: int) -> None:
        from streamswap.ops import cuda as ops

        self.landmarker = landmarker
        self.session = session
        self.input_name = landmarker.input_name
        _float_io(session, [self.input_name, landmarker.mesh_name, landmarker.flag_name], landmarker.label)
        s = self.size = landmarker.input_size
        # Faces per engine call: all of a frame's when the engine takes them, else chunks.
        self.batch = max(1, min(max_faces, session.max_shape(self.input_name)[0]))
        self._crops = cuda.device_buffer(self.batch * s * s * 3).array((self.batch, s, s, 3), np.uint8)
        self._params = ops.CropParams(self.batch)
        self.last_presence: np.ndarray = np.zeros((0,), dtype=np.float32)
        log.info("device landmarker ready", extra=kv(model=landmarker.label, crop=s, batch=self.batch))

    def landmarks_many(self, frame: DeviceFrame, faces: Sequence[Face], stream: Stream) -> np.ndarray:
        """(N, 468, 3) landmarks of `faces` in frame coordinates, as `FaceMesh.landmarks_many`;
        `last_presence` then holds each face's presence probability."""
        from streamswap.ops import cuda as ops

        s, session, host = self.size, self.session, self.landmarker
        out = np.empty((len(faces), NUM_LANDMARKS, 3), dtype=np.float32)
        presence = np.empty((len(faces),), dtype=np.float32)
        for start in range(0, len(faces), self.batch):
            chunk = faces[start : start + self.batch]
            n = len(chunk)
            crops = mesh_crops(chunk, frame.shape, s)
            staged = self._crops.view((n, s, s, 3))
            ops.warp_crops(frame.array, crops.inverses, crops.boxes, staged, stream=stream, params=self._params)
            target = session.device_input(self.input_name).view((n, 3, s, s))
            ops.crops_to_tensor(staged, target, INPUT_SCALE, INPUT_BIAS, True, stream=stream)
            session.enqueue({self.input_name: (n, 3, s, s)}, stream)
            outputs = session.fetch(stream).result()  # small: 468 points + a logit per face
            end = start + n
            decode_mesh(outputs[host.mesh_name], outputs[host.flag_name], crops, out[start:end], presence[start:end])
        self.last_presence = presence
        return out


class _PasteOptions:
    """faces.paste.mouth_mask and color_correction on the device, as the host `PasteBack`
    applies them: the mouth cut out of each face's paste mask first, then the pasted crop's
    LAB statistics moved onto its reference crop's over that mask. Buffers for `max_faces`
    crops of `size` are made once; only the mouth polygons go up per call."""

    def __init__(self, settings: Any, cuda: Cuda, max_faces: int, size: int) -> None:
        from streamswap.ops import cuda as ops

        self.size = size
        self.mouth: ops.MouthParams | None = None
        if settings.mouth_mask:
            self.mouth = ops.MouthParams(max_faces, blur_sigma(size))
            mask_bytes = max_faces * size * size * 4
            self._masks = cuda.device_buffer(mask_bytes).array((max_faces, size, size), np.float32)
            self._scratch = cuda.device_buffer(mask_bytes).array((max_faces, size, size), np.float32)
        self.color = ops.LabStats(max_faces) if settings.color_correction else None

    def cut_mouths(
        self, base: DeviceArray, matrices: Sequence[np.ndarray], faces: Sequence[Face], stream: Stream
    ) -> DeviceArray | None:
        """Per-face paste masks (`base` without each face's mouth), or None when the mouth
        mask is off (then `base` serves every face). Uploads the polygons: call it before
        the caller records its staging event."""
        from streamswap.ops import cuda as ops

        if self.mouth is None:
            return None
        n, s = len(faces), self.size
        polygons = [mouth_polygon(m, face.kps, face.landmarks) for m, face in zip(matrices, faces)]
        masks = self._masks.view((n, s, s))
        ops.mouth_masks(
            base, polygons, masks, self.mouth.sigma, self._scratch.view((n, s, s)), stream=stream, params=self.mouth
        )
        return masks

    def transfer_color(self, crops: DeviceArray, references: DeviceArray, weights: DeviceArray, stream: Stream) -> None:
        """The crops take their references' colours in place (when color_correction is on)."""
        from streamswap.ops import cuda as ops

        if self.color is not None:
            ops.transfer_color_lab(crops, references, weights, crops, stream=stream, stats=self.color)


@dataclass
class _Cropped:
    """One call's faces cropped from the device frame: (n, S, S, 3) `crops` and the `out`
    buffer the network's results go to, the frame → crop matrices and their inverses, and
    the per-face paste masks (None: the shared feathered mask serves every face)."""

    matrices: list[np.ndarray]
    inverses: list[np.ndarray]
    crops: DeviceArray
    out: DeviceArray
    masks: DeviceArray | None


class _FaceCrops:
    """Aligned crops of every face of a device frame in one launch, and their paste-back —
    the crop → network → paste shape the swapper and the enhancer share. Buffers for
    `max_faces` crops of `size` are made once; the feathered mask goes up at the first call,
    and only per-face matrices (and mouth polygons) after that. `paste_back` is the host
    adapter's `PasteBack` (its mask and faces.paste options)."""

    def __init__(self, paste_back: Any, cuda: Cuda, max_faces: int, size: int) -> None:
        from streamswap.ops import cuda as ops

        self.size = s = size
        self.max_faces = max_faces
        crop_bytes = max_faces * s * s * 3
        self._crops = cuda.device_buffer(crop_bytes).array((max_faces, s, s, 3), np.uint8)
        self._out = cuda.device_buffer(crop_bytes).array((max_faces, s, s, 3), np.uint8)
        mask = paste_back.mask(s)
        self._mask = cuda.device_buffer(mask.nbytes).array(mask.shape, np.float32)
        self._mask_host = cuda.pinned_buffer(mask.nbytes).array(mask.shape, np.float32)
        np.copyto(self._mask_host, mask)
        self._mask_uploaded = False
        self._params = ops.CropParams(max_faces)
        self._paste = _PasteOptions(paste_back.settings, cuda, max_faces, s)
        # The pinned per-face staging (matrices, mouth polygons) is rewritten only after the
        # previous call's copies ran: several calls in one frame (faces.map, one per identity).
        self._staged = cuda.event()
        self._staged_in_flight = False
        self._cuda = cuda

    def crop(self, frame: DeviceFrame, faces: Sequence[Face], template: str, stream: Stream) -> _Cropped:
        from streamswap.ops import cuda as ops

        s, n = self.size, len(faces)
        if not self._mask_uploaded:
            self._cuda.copy_htod_async(self._mask.ptr, self._mask_host, stream)
            self._mask_uploaded = True
        matrices = [align_matrix(face.kps, template, s) for face in faces]
        inverses = [invert_affine(m) for m in matrices]
        boxes = [source_roi(inv, s, s, frame.shape) for inv in inverses]
        crops = self._crops.view((n, s, s, 3))
        if self._staged_in_flight:
            self._staged.synchronize()  # at once unless an earlier call of this frame is still queued
        ops.warp_crops(frame.array, inverses, boxes, crops, stream=stream, params=self._params)
        masks = self._paste.cut_mouths(self._mask, matrices, faces, stream)
        self._staged.record(stream)  # after the last per-face upload, before the network
        self._staged_in_flight = True
        return _Cropped(matrices, inverses, crops, self._out.view((n, s, s, 3)), masks)

    def paste(self, frame: DeviceFrame, cropped: _Cropped, stream: Stream) -> None:
        """`cropped.out` back into the frame; with color_correction, it first takes the
        colours of `cropped.crops` (what it was made from), as the host's paste."""
        from streamswap.ops import cuda as ops

        s, masks = self.size, cropped.masks
        self._paste.transfer_color(cropped.out, cropped.crops, self._mask if masks is None else masks, stream)
        for i, matrix in enumerate(cropped.matrices):
            box = source_roi(cropped.inverses[i], s, s, frame.shape, margin=1)
            mask = self._mask if masks is None else masks[i]
            ops.paste(frame.array, cropped.out[i], mask, matrix, box, stream=stream)


class DeviceSwapper:
    """A neural swapper on the device; `swapper` is the host adapter (crop format, the
    identity → latent contract, the paste mask), `session` its generator engine."""

    def __init__(self, swapper: NeuralSwapper, session: DeviceSession, cuda: Cuda, max_faces: int) -> None:
        self.swapper = swapper
        self.session = session
        self.max_faces = max_faces
        fmt = swapper.crop
        self.size = fmt.size
        self.output_name = swapper._output_name
        _float_io(session, ["target", "source", self.output_name], swapper.name)
        # Faces per generator call. A model with a fixed batch of one (inswapper_128 as
        # published) or an engine built for fewer faces than the detector finds is called once
        # per chunk of `batch` faces, on the same stream: the frame stays on the device.
        batch = self.batch = session.max_shape("target")[0]
        if batch < max_faces:
            fix = (
                ""
                if not swapper.batched
                else f"; rebuild with `streamswap engines build --max-faces {max_faces}` for one call"
                if session.backend == "tensorrt"
                else f"; set inference.max_batch: {max_faces} for one call"
            )
            log.info(
                "generator calls per frame follow the face count",
                extra=kv(model=swapper.name, faces_per_call=batch, max_faces=max_faces, hint=fix.lstrip("; ") or None),
            )
        self._faces = _FaceCrops(swapper.paste_back, cuda, max_faces, self.size)
        latent_shape = (batch, swapper.latent_size)
        self._latent_host = cuda.pinned_buffer(int(np.prod(latent_shape)) * 4).array(latent_shape, np.float32)
        self._latent_dirty = False
        self._latent_copied = cuda.event()  # the pinned latent is rewritten only after its copy ran
        self._latent_in_flight = False
        self._cuda = cuda
        log.info("device swapper ready", extra=kv(model=swapper.name, crop=self.size, max_faces=max_faces))

    def set_identity(self, identity: Any) -> None:
        """The host adapter computes the latent once; it is uploaded at the next swap."""
        self.swapper.set_identity(identity)
        latent = self.swapper._latent
        if latent is None:  # set_identity always leaves one
            raise RuntimeError(f"{self.swapper.name}: set_identity() left no latent")
        if self._latent_in_flight:  # several identities in one frame (faces.map)
            self._latent_copied.synchronize()
            self._latent_in_flight = False
        self._latent_host[...] = latent.reshape(1, -1)
        self._latent_dirty = True

    def prepare_identity(self, sources: Any) -> Any:
        return self.swapper.prepare_identity(sources)

    def swap(self, frame: DeviceFrame, faces: Sequence[Face], stream: Stream) -> None:
        """Replace `faces` in the device frame, in place: one crop launch, one generator
        call (one per `batch` faces for a network that takes fewer), three mask launches and
        two colour-transfer launches for all faces when those options are on, one paste
        launch per face."""
        from streamswap.ops import cuda as ops

        if not faces:
            return
        if len(faces) > self.max_faces:
            faces = faces[: self.max_faces]
        if self.swapper._latent is None:
            raise RuntimeError(f"{self.swapper.name}: set_identity() must be called before swap()")
        session, s, n = self.session, self.size, len(faces)
        if self._latent_dirty:  # a new identity: every batch row of the source input at once
            self._cuda.copy_htod_async(session.device_input("source").ptr, self._latent_host, stream)
            self._latent_copied.record(stream)
            self._latent_in_flight = True
            self._latent_dirty = False
        fmt = self.swapper.crop
        cropped = self._faces.crop(frame, faces, fmt.template, stream)
        for start in range(0, n, self.batch):  # one generator call for all faces when it can take them
            k = min(self.batch, n - start)
            target = session.device_input("target").view((k, 3, s, s))
            ops.crops_to_tensor(
                cropped.crops.rows(start, k),
                target,
                self.swapper._in_scale,
                self.swapper._in_bias,
                fmt.rgb,
                stream=stream,
            )
            session.enqueue({"target": (k, 3, s, s), "source": (k, self.swapper.latent_size)}, stream)
            out = session.device_output(self.output_name)
            ops.tensor_to_crops(out, cropped.out.rows(start, k), fmt.out_scale, fmt.out_offset, fmt.rgb, stream=stream)
        # The generated crops take the aligned target crops' colours (color_correction).
        self._faces.paste(frame, cropped, stream)


class DeviceEnhancer:
    """A face enhancer (GFPGAN contract) on the device, after the swap on the swap stream:
    every face's `template` crop warped from the swapped device frame in one launch, the
    network once per `batch` faces, its output mixed with the crop (`blend`) and pasted
    back with the feathered mask (and faces.paste's mouth mask and colour transfer) — the
    host `GfpganEnhancer`'s steps with its CPU twins' device kernels. `enhancer` is the
    host adapter (crop geometry, blend, mask)."""

    def __init__(self, enhancer: Any, session: DeviceSession, cuda: Cuda, max_faces: int) -> None:
        self.enhancer = enhancer
        self.session = session
        self.max_faces = max_faces
        self.input_name = session.inputs[0].name
        self.output_name = session.outputs[0].name
        _float_io(session, [self.input_name, self.output_name], enhancer.name)
        self.batch = session.max_shape(self.input_name)[0]
        self.size = enhancer.size
        self._faces = _FaceCrops(enhancer.paste_back, cuda, max_faces, self.size)
        log.info("device enhancer ready", extra=kv(model=enhancer.name, crop=self.size, faces_per_call=self.batch))

    def enhance(self, frame: DeviceFrame, faces: Sequence[Face], stream: Stream) -> None:
        from streamswap.ops import cuda as ops

        faces = list(faces)[: self.max_faces]
        if not faces:
            return
        s, n, enhancer = self.size, len(faces), self.enhancer
        cropped = self._faces.crop(frame, faces, enhancer.template, stream)
        for start in range(0, n, self.batch):
            k = min(self.batch, n - start)
            blob = self.session.device_input(self.input_name).view((k, 3, s, s))
            ops.crops_to_tensor(cropped.crops.rows(start, k), blob, IN_SCALE, IN_BIAS, True, stream=stream)
            self.session.enqueue({self.input_name: (k, 3, s, s)}, stream)
            out = self.session.device_output(self.output_name)
            mixed = cropped.out.rows(start, k)
            ops.tensor_blend_crops(
                out, cropped.crops.rows(start, k), mixed, OUT_SCALE, OUT_OFFSET, enhancer.blend, True, stream=stream
            )
        # As the host enhancer's paste: the enhanced crops take the swapped crops' colours.
        self._faces.paste(frame, cropped, stream)


# --- the face stages on the device ---------------------------------------------------------
class _SlotDetector:
    """The detect stage's detector: on the device for the pipeline's frame slot being
    processed, the host adapter for any other image (tools call the stage directly)."""

    def __init__(self, device: DeviceDetector, stage: "DeviceDetectStage") -> None:
        self.device = device
        self.host = device.detector
        self.stage = stage

    def detect(self, bgr: np.ndarray) -> list[Face]:
        current = self.stage.current
        if current is not None and bgr is current[0]:
            return self.device.detect(current[1], self.stage.stream)
        return self.host.detect(bgr)


class _SlotLandmarker:
    """The detect stage's landmarker: on the device for the frame slot being processed
    (the frame the stage uploaded), the host adapter for any other image."""

    def __init__(self, device: DeviceLandmarker, stage: "DeviceDetectStage") -> None:
        self.device = device
        self.host = device.landmarker
        self.stage = stage
        self.last_presence: np.ndarray = np.zeros((0,), dtype=np.float32)

    def landmarks_many(self, bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        current = self.stage.current
        ran: DeviceLandmarker | FaceMesh
        if current is not None and bgr is current[0]:
            ran, out = self.device, self.device.landmarks_many(current[1], faces, self.stage.stream)
        else:
            ran, out = self.host, self.host.landmarks_many(bgr, faces)
        self.last_presence = ran.last_presence
        return out


class _SlotSwapper:
    """The swap stage's swapper: swaps the device frame of the slot being processed (the
    stream waits on its upload event once), the host adapter for any other image."""

    def __init__(self, device: DeviceSwapper, stage: "DeviceSwapStage") -> None:
        self.device = device
        self.host = device.swapper
        self.stage = stage
        self.name = self.host.name

    @property
    def masks(self) -> FaceMasks | None:
        return self.host.masks

    @masks.setter
    def masks(self, masks: FaceMasks | None) -> None:
        self.host.masks = masks

    def prepare_identity(self, sources: Any) -> Any:
        return self.host.prepare_identity(sources)

    def set_identity(self, identity: Any) -> None:
        self.device.set_identity(identity)

    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        on_device = self.stage.device_frame(frame)
        if on_device is None:
            self.host.swap(frame, faces)
        else:
            self.device.swap(on_device, faces, self.stage.stream)


class DeviceDetectStage(DetectStage):
    """DetectStage on the GPU path: uploads every frame once on the detect stream (the
    swap stage reads it there), the detector runs on the device, and so does the
    landmarker when it is a `DeviceLandmarker` (a host landmarker reads the pinned slot)."""

    def __init__(
        self,
        device: DeviceDetector,
        frames: DeviceFrames,
        stream: Stream,
        *,
        landmarker: DeviceLandmarker | Landmarker | None = None,
        **kwargs: Any,
    ) -> None:
        self.frames = frames
        self.stream = stream
        self.current: tuple[np.ndarray, DeviceFrame] | None = None
        if isinstance(landmarker, DeviceLandmarker):
            landmarker = _SlotLandmarker(landmarker, self)
        super().__init__(_SlotDetector(device, self), landmarker=landmarker, **kwargs)

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        self.current = (frame, self.frames.upload(frame, self.stream))
        try:
            super().process(frame, item)
        finally:
            self.current = None


class _SlotEnhancer:
    """The swap stage's enhancer: on the device frame the swap left for the slot being
    processed, the host adapter for any other image."""

    def __init__(self, device: DeviceEnhancer, stage: "DeviceSwapStage") -> None:
        self.device = device
        self.host = device.enhancer
        self.stage = stage

    def enhance(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        on_device = self.stage.device_frame(frame)
        if on_device is None:
            self.host.enhance(frame, faces)
        else:
            self.device.enhance(on_device, faces, self.stage.stream)


class DeviceSwapStage(SwapStage):
    """SwapStage on the GPU path: swaps (and enhances, with a `DeviceEnhancer`) in the
    device frame on the swap stream after the upload event, and downloads the frame once
    when any face was swapped."""

    def __init__(
        self,
        device: DeviceSwapper,
        frames: DeviceFrames,
        stream: Stream,
        *,
        enhancer: DeviceEnhancer | None = None,
        **kwargs: Any,
    ) -> None:
        self.frames = frames
        self.stream = stream
        self.current: np.ndarray | None = None
        self.on_device: DeviceFrame | None = None
        slot_enhancer = _SlotEnhancer(enhancer, self) if enhancer is not None else None
        super().__init__(_SlotSwapper(device, self), enhancer=slot_enhancer, **kwargs)

    def device_frame(self, frame: np.ndarray) -> DeviceFrame | None:
        """The device frame of `frame` when it is the slot being processed (this stage's
        stream waits on its upload event, once per frame); None for any other image."""
        if self.current is None or frame is not self.current:
            return None
        if self.on_device is None:
            self.on_device = self.frames.frame(frame, self.stream)
        return self.on_device

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        self.current, self.on_device = frame, None
        try:
            super().process(frame, item)
            if self.on_device is not None:
                self.frames.download(frame, self.stream)
        finally:
            self.current, self.on_device = None, None
