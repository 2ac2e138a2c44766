"""The served-ranking record of a stateless replica, in one place: the Lua function that
writes it (``RedisStore`` layout) and the record riding in a ranking's own state read.

``serving.redis_store`` runs the function as a script of its own; ``serving.redis_state``'s
lookup runs it inside the ranking's read, so a ranking needs one round trip, not two
(``serving.recording`` chooses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Records a served ranking for the event checks under the store prefix ``p``; 0 when the
# request id is another user's ranking.
RECORD_LUA = """
local function record(p, rid, user, query, t, variant, cands, ttl_ms, now)
  local k = p .. 'req:' .. rid
  local owner = redis.call('HGET', k, 'user')
  if owner and owner ~= user then return 0 end
  redis.call('HSET', k, 'user', user, 'query', query, 't', t, 'variant', variant, 'cands', cands)
  redis.call('PEXPIRE', k, tonumber(ttl_ms))
  redis.call('ZADD', p .. 'reqs', tonumber(now), rid)
  local clock = tonumber(redis.call('GET', p .. 'clock') or '0')
  if tonumber(t) > clock then redis.call('SET', p .. 'clock', t) end
  return 1
end
"""


@dataclass
class RecordRide:
    """A served ranking to record in the ranking's own read (``RECORD_LUA``'s 9 arguments);
    ``mine`` is set once that read has run (None: it did not)."""

    args: list[Any]
    mine: bool | None = None
