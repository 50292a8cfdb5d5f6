"""Model families: one record each (`registry.Family`), registered by `records`.

``from sensorlm.families import get_family`` is the lookup every layer uses; the records module
is imported here so that importing the package registers them.
"""

from sensorlm.families.registry import (
    FAMILIES,
    Family,
    embeds,
    SearchParam,
    family_of_config,
    get_family,
    register_family,
    resolve,
)
from sensorlm.families import records  # noqa: E402,F401  (registers the families)

__all__ = ["FAMILIES", "Family", "embeds", "SearchParam", "family_of_config", "get_family", "register_family", "resolve"]
