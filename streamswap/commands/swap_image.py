"""`streamswap swap-image`: swap the source face onto the faces of one photo or a folder."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from streamswap.errors import InputError, NoFaceError, OutputError, StreamswapError

HELP = "swap the source face onto every face of a photo (or a folder of photos)"

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--source", action="append", metavar="IMAGE",
                        help="photo of the face to put on the targets; repeat for several photos "
                             "of the same person (default: the config's `source`)")
    parser.add_argument("-t", "--target", required=True, metavar="IMAGE|FOLDER",
                        help="photo whose faces are replaced, or a folder of photos")
    parser.add_argument("-o", "--output", required=True, metavar="FILE|FOLDER",
                        help="output image (format from its extension, e.g. out.png); a folder "
                             "when --target is a folder")


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.wiring import build_face_processor

    target = Path(args.target).expanduser()
    if not target.exists():
        raise InputError(f"{target}: target not found; check the path")
    overrides = {"source": list(args.source)} if args.source else {}
    config = ctx.config(**overrides)
    if not config.source:
        raise InputError("no source face given; pass --source FACE.jpg (or set `source` in the config)")
    for src in config.source:  # a missing source is named before any model loads
        if not Path(src).expanduser().exists():
            raise InputError(f"{src}: source image not found; check the path")
    output = Path(args.output).expanduser()
    image = None
    if not target.is_dir():
        from streamswap.io.images import check_output_path, read_image

        if not output.is_dir():
            check_output_path(output)  # a bad output name is reported before any work
        image = read_image(target)  # a bad target is reported before any model loads
    processor = build_face_processor(config)
    processor.set_source_images(config.source)
    if image is None:
        return _swap_folder(processor, target, output)
    if output.is_dir():
        output = output / f"{target.stem}.png"
    count = swap_file(processor, target, output, image)
    print(f"wrote {output} ({count} face{'s' if count != 1 else ''} swapped)")
    return 0


def swap_file(processor: Any, target: Path, output: Path, image: Any = None) -> int:
    """Swap every face of `target` (already read: `image`) into `output`; returns the
    number of faces."""
    from streamswap.io.images import read_image, write_image

    if image is None:
        image = read_image(target)
    faces = processor.detect_still(image)  # no tracking or smoothing across images
    if not faces:
        raise NoFaceError(f"{target}: no face found in the target image")
    processor.swap(image, faces)
    write_image(output, image)
    return len(faces)


def _swap_folder(processor: Any, folder: Path, outdir: Path) -> int:
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: --target is a folder, so --output must be a folder too")
    targets = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not targets:
        raise InputError(f"{folder}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
    outdir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = 0
    for target in targets:
        name = f"{target.stem}.png" if f"{target.stem}.png" not in used else f"{target.name}.png"
        used.add(name)
        try:
            count = swap_file(processor, target, outdir / name)
        except StreamswapError as exc:
            failed += 1
            print(f"failed: {exc}", file=sys.stderr)
            continue
        print(f"wrote {outdir / name} ({count} face{'s' if count != 1 else ''} swapped)")
    done = len(targets) - failed
    print(f"{done} of {len(targets)} images swapped" + (f", {failed} failed" if failed else ""),
          file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0
