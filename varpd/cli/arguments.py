"""argparse types more than one command shares: one VNI type for every command taking a VNI."""

from __future__ import annotations

import argparse

from varpd.model.identifiers import VNI_RANGE, vni_problem

VNI_HELP = f"{VNI_RANGE}, the VXLAN VNI range"


def vni(text: str) -> int:
    """argparse type of --vni / -v: a decimal (or 0x hexadecimal) VNI in 1-16777215."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: a VNI is {VNI_RANGE} "
                                         "(the VXLAN VNI range)") from None
    if problem := vni_problem(value):
        raise argparse.ArgumentTypeError(problem)
    return value
