"""`streamswap swap-image`: swap the source face onto the faces of one photo or a folder."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from streamswap.errors import InputError, NoFaceError, OutputError, StreamswapError

HELP = "swap the source face onto every face of a photo (or a folder of photos)"
EXAMPLES = (
    "streamswap swap-image -s face.jpg -t group.jpg -o swapped.png",
    "streamswap swap-image -s face.jpg -t photos/ -o swapped/",
    "streamswap swap-image -c configs/desktop-gpu.yaml -s face.jpg -t group.jpg -o out.jpg",
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--source",
        action="append",
        metavar="IMAGE",
        help="photo of the face to put on the targets; repeat for several photos "
        "of the same person (default: the config's `source`)",
    )
    parser.add_argument(
        "-t",
        "--target",
        required=True,
        metavar="IMAGE|FOLDER",
        help="photo whose faces are replaced, or a folder of photos",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE|FOLDER",
        help="output image (format from its extension, e.g. out.png); a folder when --target is a folder",
    )
    parser.add_argument(
        "-y",
        "--overwrite",
        action="store_true",
        help="replace output images that already exist (default: refuse); an output "
        "that is a target or source photo is always refused",
    )


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.wiring import build_face_stages

    target = Path(args.target).expanduser()
    if not target.exists():
        raise InputError(f"{target}: target not found; check the path")
    overrides = {"source": list(args.source)} if args.source else {}
    config = ctx.config(**overrides)
    if not config.source:
        raise InputError("no source face given; pass --source FACE.jpg (or set `source` in the config)")
    from streamswap.files import check_regular

    for src in config.source:  # a missing or special (FIFO, device) source is named before any model loads
        check_regular(Path(src).expanduser(), "source image")
    output = Path(args.output).expanduser()
    existing = "overwrite" if args.overwrite else "refuse"
    protect = [str(Path(src).expanduser()) for src in config.source]
    image = None
    planned: list[tuple[Path, Path]] = []
    if not target.is_dir():
        from streamswap.io.images import check_output_path, read_image

        if output.is_dir():
            output = output / f"{target.stem}.png"
        check_output_path(output)  # a bad output name is reported before any work
        _check_output(output, existing, [*protect, str(target)])
        image = read_image(target)  # a bad target is reported before any model loads
    else:
        planned = _plan_folder(target, output, existing, protect)
    processor = build_face_stages(config)
    processor.set_source_images(config.source)
    label = config.io.label  # responsible use: visible label and file tag
    if image is None:
        return _swap_folder(processor, output, planned, label)
    count = swap_file(processor, target, output, image, label)
    print(f"wrote {output} ({count} face{'s' if count != 1 else ''} swapped)")
    return 0


def swap_file(processor: Any, target: Path, output: Path, image: Any = None, label: Any = None) -> int:
    """Swap every face of `target` (already read: `image`) into `output`; returns the
    number of faces. `label` (io.label): the visible label and the file's metadata tag."""
    from streamswap.io.images import read_image, write_image

    if image is None:
        image = read_image(target)
    faces = processor.swap_image(image)  # a still photo: no tracking across images
    if not faces:
        raise NoFaceError(f"{target}: no face found in the target image")
    if label is not None and label.enabled:
        from streamswap.io.label import Labeler

        Labeler(label).draw(image)
    tag = None
    if label is not None and label.metadata:
        from streamswap.io.label import tag_text

        tag = tag_text(label)
    write_image(output, image, tag=tag)
    return len(faces)


def _check_output(output: Path, existing: str, protect: list[str]) -> None:
    from streamswap.files import check_output_file

    if not output.parent.is_dir():  # no folders are created for a single image
        raise OutputError(f"{output}: folder {output.parent} does not exist; create it first")
    check_output_file(output, existing, protect, error=OutputError)


def _check_output_folder(outdir: Path) -> None:
    """An output folder must exist or be creatable as one new folder in an existing one
    (a typo must not create a tree of folders, e.g. at the root)."""
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: --target is a folder, so --output must be a folder too")
    if not outdir.exists() and not outdir.parent.is_dir():
        raise OutputError(f"{outdir}: its folder {outdir.parent} does not exist; create it first")


def _plan_folder(folder: Path, outdir: Path, existing: str, protect: list[str]) -> list[tuple[Path, Path]]:
    """(target, output) pairs for a folder of targets, every output checked before any model
    loads or any file is written: none may be a target or a source photo (an output folder
    that is the target folder), none may replace a file without -y."""
    _check_output_folder(outdir)
    targets = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not targets:
        raise InputError(f"{folder}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
    used: set[str] = set()
    planned = []
    for target in targets:
        name = f"{target.stem}.png" if f"{target.stem}.png" not in used else f"{target.name}.png"
        used.add(name)
        planned.append((target, outdir / name))
    if outdir.is_dir():
        for _, out in planned:
            _check_output(out, existing, [*protect, *map(str, targets)])
    return planned


def _swap_folder(processor: Any, outdir: Path, planned: list[tuple[Path, Path]], label: Any = None) -> int:
    outdir.mkdir(exist_ok=True)
    failed = 0
    for target, out in planned:
        name = out.name
        try:
            count = swap_file(processor, target, out, label=label)
        except StreamswapError as exc:
            failed += 1
            print(f"failed: {exc}", file=sys.stderr)
            continue
        print(f"wrote {outdir / name} ({count} face{'s' if count != 1 else ''} swapped)")
    done = len(planned) - failed
    print(
        f"{done} of {len(planned)} images swapped" + (f", {failed} failed" if failed else ""),
        file=sys.stderr if failed else sys.stdout,
    )
    return 1 if failed else 0
