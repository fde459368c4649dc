"""A volume mount written short, ``NAME:/PATH[:OPTIONS]``, as docker's ``-v`` has it: one
grammar for ``agentos sandbox create -v`` and a manifest's ``volumes`` list. OPTIONS are
``ro`` or ``rw`` and ``size=SIZE``, comma-separated, each at most once. Only the text's shape
is read here: whoever takes it checks the name, the path and the size as for any SPAWN."""
from __future__ import annotations

from typing import NamedTuple

FORM = "NAME:/PATH[:OPTIONS] (OPTIONS: ro or rw, size=SIZE, comma-separated)"


class ShortVolume(NamedTuple):
    name: str
    path: str
    #: None: not said (read-write).
    read_only: bool | None
    #: The size as written (``"2Gi"``); None: not said.
    size: str | None


def parse_short_volume(text: str) -> ShortVolume:
    """``data:/data:ro,size=2Gi`` -> ShortVolume('data', '/data', True, '2Gi'); ValueError
    saying what is wrong otherwise."""
    name, _, rest = text.partition(":")
    path, colon, options = rest.partition(":")
    if not name or not path:
        raise ValueError(f"{text!r} is not {FORM}")
    read_only: bool | None = None
    size: str | None = None
    for option in options.split(",") if colon else ():
        key, _, value = option.partition("=")
        if option in ("ro", "rw") and read_only is None:
            read_only = option == "ro"
        elif key == "size" and value and size is None:
            size = value
        else:
            raise ValueError(f"{text!r}: {option!r} is not an option (ro, rw, size=SIZE, each once)")
    return ShortVolume(name, path, read_only, size)
