"""The VM fixtures of the fleet tests, shared."""

from tests.fleet.conftest import netns_name, unikernel_image

__all__ = ["netns_name", "unikernel_image"]
