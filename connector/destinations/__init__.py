"""Destinations for releases: the config's `destination.type` names one here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.destinations.base import Destination, PublishError, PublishResult

if TYPE_CHECKING:
    from connector.config import Config


def create_destination(config: "Config") -> Destination:
    dest = config.job.destination
    if dest.type == "folder":
        from connector.destinations.folder import FolderDestination

        return FolderDestination(config.resolve_path(dest.path))
    if dest.type == "s3":
        from connector.destinations.s3 import S3Destination

        return S3Destination.from_config(dest)
    if dest.type == "central_api":
        from connector.destinations.central_api import CentralApiDestination

        return CentralApiDestination.from_config(dest, partner=config.job.partner.id)
    raise ValueError(f"unknown destination type {dest.type!r}")


__all__ = ["Destination", "PublishError", "PublishResult", "create_destination"]
