"""The simulated local-services world: merchants, users, searches, true relevance, clicks."""

from pipelines.world.clicks import Response
from pipelines.world.config import WorldConfig
from pipelines.world.searches import Searches
from pipelines.world.world import World

__all__ = ["Response", "Searches", "World", "WorldConfig"]
