"""Settings of the face stages. Model fields take a catalogue name (`streamswap models list`)
or a path to the user's own ONNX file, in which case `contract` names the catalogue entry
whose I/O contract the file follows (it is loaded after a warning that it is unverified)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.errors import ConfigError
from streamswap.typedconfig import choices, limits


@dataclass
class DetectorSettings:
    model: str = "blazeface"
    contract: str | None = None
    size: int = field(default=640, metadata=limits(min=128, max=1280))  # square input side
    score_threshold: float = field(default=0.5, metadata=limits(min=0.0, max=1.0))
    nms_iou: float = field(default=0.4, metadata=limits(min=0.0, max=1.0))
    max_faces: int = field(default=8, metadata=limits(min=1, max=64))


@dataclass
class LandmarkerSettings:
    model: str | None = "facemesh"  # None: no dense landmarks (detector key points only)
    contract: str | None = None


@dataclass
class RecognizerSettings:
    model: str = "arcface_w600k_r50"
    contract: str | None = None


@dataclass
class SwapperSettings:
    # "mesh" is the built-in offline swapper: a catalogue entry with no file (no neural
    # weights, commercially safe).
    model: str = "mesh"
    contract: str | None = None
    source_face_index: int | None = None  # None: the largest face of each source image


@dataclass
class PasteSettings:
    blur: float = field(default=0.3, metadata=limits(min=0.0, max=1.0))  # feather, × half crop
    padding: float = field(default=0.0, metadata=limits(min=0.0, max=0.5))  # mask inset, × crop
    color_correction: bool = False  # mean/std transfer in LAB
    mouth_mask: bool = False  # keep the target's own mouth interior


@dataclass
class MeshSettings:
    """Look of the built-in mesh swapper. Fractions are of the target face size (the face
    oval's larger side) unless said otherwise."""

    feather: float = field(default=0.06, metadata=limits(min=0.0, max=0.3))  # soft edge inside the face oval
    # Soft edge of the usable source texture (keeps the source's hair/background out).
    source_feather: float = field(default=0.05, metadata=limits(min=0.0, max=0.3))
    # How far above the brows the swap reaches (× brow-to-hairline distance; 0 = brows only).
    forehead: float = field(default=0.15, metadata=limits(min=0.0, max=1.0))
    eye_margin: float = field(default=0.15, metadata=limits(min=0.0, max=1.0))  # kept target eyes, × eye height
    mouth_margin: float = field(default=0.02, metadata=limits(min=0.0, max=0.2))  # kept mouth interior growth
    color_match: bool = True  # LAB mean/std transfer onto the target's skin
    relight: float = field(default=1.0, metadata=limits(min=0.0, max=1.0))  # take the target's shading
    relight_color: float = field(default=0.5, metadata=limits(min=0.0, max=1.0))  # share of local tint with it
    relight_scale: float = field(default=0.2, metadata=limits(min=0.02, max=1.0))  # "low frequency" blur radius
    max_std_ratio: float = field(default=2.2, metadata=limits(min=1.0, max=4.0))  # clamp of the std transfer
    # Share of the way the swapped skin's colour moves toward the target's skin around the
    # face (neck, ears, forehead edge), from its own face's.
    surround: float = field(default=0.15, metadata=limits(min=0.0, max=1.0))
    # A part of the face the source shows edge-on (stretch above this: target area / source
    # area, relative to face size) is filled from the mirrored other side of the source.
    mirror_fill: bool = True
    mirror_stretch: float = field(default=1.8, metadata=limits(min=1.0, max=10.0))
    # Triangles still stretched more than this (e.g. the side of the nose or cheek a frontal
    # source shows edge-on, on a profile target) keep the target's own pixels.
    max_stretch: float = field(default=3.0, metadata=limits(min=1.0, max=1000.0))
    # Larger faces are rendered at this size (px) and blended at full size.
    max_work_face: int = field(default=320, metadata=limits(min=64, max=2048))


@dataclass
class TrackingSettings:
    # Run the detector every N frames, track the faces in between. On a live input N rises
    # (up to max_detect_every) while the measured detect time would not hold the input's
    # rate, and comes back when it would (faces/cadence.py); files keep detect_every.
    detect_every: int = field(default=1, metadata=limits(min=1, max=60))
    max_detect_every: int = field(default=4, metadata=limits(min=1, max=60))
    smoothing: float = field(default=0.5, metadata=limits(min=0.0, max=0.95))  # 0 = off


SELECT_MODES = ("all", "one", "reference")
SELECT_ORDERS = ("left-right", "right-left", "top-bottom", "bottom-top", "large-small", "small-large", "best-score")
UNMATCHED = ("keep", "default-source")


@dataclass
class SelectSettings:
    """Which faces are swapped: all, one (by `order` and `index`), or the people who look
    like the `reference` photo(s) (needs a recognizer)."""

    mode: str = field(default="all", metadata=choices(*SELECT_MODES))
    order: str = field(default="left-right", metadata=choices(*SELECT_ORDERS))
    index: int = field(default=0, metadata=limits(min=0, max=63))  # mode one: position in `order`
    reference: list[str] = field(default_factory=list)  # photos of the people to swap (mode reference)
    threshold: float = field(default=0.4, metadata=limits(min=-1.0, max=1.0))  # cosine similarity, same person
    recognize_every: int = field(default=30, metadata=limits(min=1, max=10000))  # frames between re-recognitions
    hold_frames: int = field(default=15, metadata=limits(min=0, max=1000))  # identity kept through occlusions

    def validate(self, where: str) -> None:
        if self.mode == "reference" and not self.reference:
            raise ConfigError(f"{where}.reference: mode 'reference' needs at least one photo of the person to swap")


@dataclass
class MapEntry:
    """Faces like `reference` (a photo of a person in the video) become `source`."""

    reference: str
    source: str


MASK_REGIONS = ("skin", "brows", "eyes", "nose", "mouth", "lips")


@dataclass
class MaskSettings:
    """Where the swap is blended in, for every swapper (combined with the feathered mask)."""

    regions: list[str] = field(default_factory=lambda: list(MASK_REGIONS))  # FaceMesh regions replaced
    occluder: str | None = None  # occlusion model (xseg contract), e.g. xseg_1: occluders stay the target's
    parser: str | None = None  # face parser (bisenet contract), e.g. bisenet_resnet_34: regions by class

    def validate(self, where: str) -> None:
        for i, region in enumerate(self.regions):
            if region not in MASK_REGIONS:
                raise ConfigError(
                    f"{where}.regions[{i}]: unknown region {region!r}; choose from {', '.join(MASK_REGIONS)}"
                )
        if not self.regions:
            raise ConfigError(
                f"{where}.regions: empty, nothing would be swapped; list at least one of {', '.join(MASK_REGIONS)}"
            )


@dataclass
class FacesSettings:
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    landmarker: LandmarkerSettings = field(default_factory=LandmarkerSettings)
    recognizer: RecognizerSettings = field(default_factory=RecognizerSettings)
    swapper: SwapperSettings = field(default_factory=SwapperSettings)
    enhancer: str | None = None  # e.g. gfpgan_1.4
    paste: PasteSettings = field(default_factory=PasteSettings)
    mask: MaskSettings = field(default_factory=MaskSettings)
    mesh: MeshSettings = field(default_factory=MeshSettings)  # the mesh swapper's look
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    select: SelectSettings = field(default_factory=SelectSettings)
    map: list[MapEntry] = field(default_factory=list)  # person -> source rules (need a recognizer)
    # With `map`: faces no rule matches keep their own face, or get the main `source`.
    unmatched: str = field(default="keep", metadata=choices(*UNMATCHED))
