"""``patchcore-kit demo`` and ``download``: data to try the kit on."""

from __future__ import annotations

from pathlib import Path


def cmd_demo(args) -> int:
    from ..outputs import check_output_folder, claim_output_folder
    from ..report import run_demo

    output = args.output if args.output is not None else Path("runs") / "demo"
    check_output_folder(output, args.overwrite)
    run_demo(output=claim_output_folder(output), fast=args.fast, progress=True)
    return 0


def cmd_download(args) -> int:
    from ..atomic import display
    from ..data import download_mtd, download_mvtec

    path = download_mtd(args.dest) if args.dataset == "mtd" else download_mvtec(args.dest, args.categories)
    print(f"{args.dataset} is in {display(path)}")
    return 0
