"""Every backbone tltool can fine-tune: one table of sources, each with its own table of backbones.

A source is a module with ``SPECS`` (name -> BackboneSpec, static data, so
listing them imports no TensorFlow) and ``lookup(name) -> spec | None``.
Adding a backbone family is adding a source module and one entry here.
"""

from __future__ import annotations

from types import ModuleType

from tltool.errors import TltoolError, did_you_mean
from tltool.models import applications, hub
from tltool.models.backbone import BackboneSpec

SOURCES: dict[str, ModuleType] = {applications.SOURCE: applications, hub.SOURCE: hub}


def get_backbone(name: str) -> BackboneSpec:
    """Look a backbone up in every source.

    Raises:
        TltoolError: unknown name; the message lists close matches.
    """
    for source in SOURCES.values():
        spec = source.lookup(name)
        if spec is not None:
            return spec
    names = [spec.name for spec in all_backbones()]
    raise TltoolError(f"unknown backbone {name!r}{did_you_mean(applications.normalise(name), names)}; "
                      "run `tltool backbones` for the full list")


def all_backbones() -> list[BackboneSpec]:
    """Every registered backbone, source by source, in table order."""
    return [spec for source in SOURCES.values() for spec in source.SPECS.values()]
