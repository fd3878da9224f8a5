"""What every destination is: a place that receives a whole bundle or nothing, once per release id."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from connector.errors import PublishError
from connector.records import Problem
from connector.release import Bundle


@dataclass(frozen=True)
class PublishResult:
    release_id: str
    location: str
    published: bool  # False: the same release was already there (a no-op)


class Destination(ABC):
    @abstractmethod
    def publish(self, bundle: Bundle) -> PublishResult:
        """Make the bundle visible atomically; publishing an identical release again changes nothing."""

    def check(self) -> list[Problem]:
        return []

    @abstractmethod
    def describe(self) -> str:
        """Where releases go, safe to show (no credentials)."""
