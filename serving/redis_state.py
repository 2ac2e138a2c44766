"""Counters and behaviour sequences in Redis, with the in-memory state's exact semantics: the
storage stateless replicas will read in one round trip per ranking (not yet wired into the
service; ``tests/serving/test_redis_state.py`` holds it to ``CounterTable`` and
``HistoryStore`` on the same events).

Counters (``pipelines.features.counters``). An event at time ``t`` falls in bucket
``(t + delay) // bucket``, but never before the current bucket (the shared clock's); a read
at clock bucket ``B`` sees buckets ``< B``, and a window of ``w`` buckets those ``>= B - w``.
Per counter key, two Redis keys:
- ``c:<table>:<key>``, a hash: ``B`` (the bucket the key's totals are as of), ``T:<k>`` (all
  buckets ``< B``), ``W<w>:<k>`` (buckets in ``[B - w, B)``) per kind ``k``, and
  ``b:<bucket>:<k>`` for each bucket not yet out of every window;
- ``z:<table>:<key>``, a sorted set of those buckets, so a read brings the key from its ``B``
  to the clock's by visiting only the buckets that entered or left a window since: each
  bucket is added once and subtracted once per window, as ``CounterTable.advance_to`` does.
Reads therefore write (the catch-up), inside the same script: no reader sees a half state.

Histories (``pipelines.features.history``): ``h:<user>``, a sorted set scored by time, each
member ``<position>|<sequence>|<ordered>|<item>`` (zero-padded numbers), so equal times sort
by position, then arrival; at most ``2 * max_len`` kept, the oldest dropped, as in memory.

Numbers: Lua reads Redis numbers as doubles, exact below 2**53 (microsecond times of this
century and counts are far below); buckets are computed with ``%``, not a float division.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.features.history import Sequences

_COMMON = """
local p, clock_key = ARGV[1], ARGV[2]
local bus = tonumber(ARGV[3])
local function bucket_of(t) return (t - t % bus) / bus end
local function clock_bucket()
  return bucket_of(tonumber(redis.call('GET', clock_key) or '0'))
end
"""

# ARGV: prefix, clock key, bucket_us, t_us, n_windows, finite windows..., max_len, user (''
# for none), then per counter key: table, key, kinds. Returns {counts, history}: per key its
# totals then each finite window's sums (kinds each); the history newest first as
# member, score pairs.
_LOOKUP = (
    _COMMON
    + """
local t = tonumber(ARGV[4])
local clock = tonumber(redis.call('GET', clock_key) or '0')
if t > clock then redis.call('SET', clock_key, ARGV[4]); clock = t end
local B = bucket_of(clock)
local nw = tonumber(ARGV[5])
local windows, wmax = {}, 0
for i = 1, nw do
  windows[i] = tonumber(ARGV[5 + i])
  if windows[i] > wmax then wmax = windows[i] end
end
local a = 6 + nw
local max_len, user = tonumber(ARGV[a]), ARGV[a + 1]
a = a + 2
local out = {}
while a <= #ARGV do
  local h = p .. 'c:' .. ARGV[a] .. ':' .. ARGV[a + 1]
  local z = p .. 'z:' .. ARGV[a] .. ':' .. ARGV[a + 1]
  local K = tonumber(ARGV[a + 2])
  a = a + 3
  local Bk = tonumber(redis.call('HGET', h, 'B') or '-1')
  if Bk >= 0 and Bk < B then
    local entering = redis.call('ZRANGEBYSCORE', z, Bk, B - 1)
    for _, b in ipairs(entering) do
      for k = 1, K do
        local c = tonumber(redis.call('HGET', h, 'b:' .. b .. ':' .. k) or '0')
        if c ~= 0 then
          redis.call('HINCRBY', h, 'T:' .. k, c)
          for i = 1, nw do
            if windows[i] > 0 and tonumber(b) >= B - windows[i] then
              redis.call('HINCRBY', h, 'W' .. windows[i] .. ':' .. k, c)
            end
          end
        end
      end
    end
    for i = 1, nw do
      local w = windows[i]
      if w > 0 then  -- in the window at Bk ([Bk - w, Bk)), out of it now (< B - w)
        local leaving = redis.call('ZRANGEBYSCORE', z, Bk - w, math.min(Bk, B - w) - 1)
        for _, b in ipairs(leaving) do
          for k = 1, K do
            local c = tonumber(redis.call('HGET', h, 'b:' .. b .. ':' .. k) or '0')
            if c ~= 0 then redis.call('HINCRBY', h, 'W' .. w .. ':' .. k, -c) end
          end
        end
      end
    end
    local gone = redis.call('ZRANGEBYSCORE', z, '-inf', B - wmax - 1)
    for _, b in ipairs(gone) do
      for k = 1, K do redis.call('HDEL', h, 'b:' .. b .. ':' .. k) end
    end
    if #gone > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', B - wmax - 1) end
    redis.call('HSET', h, 'B', B)
  end
  for k = 1, K do out[#out + 1] = tonumber(redis.call('HGET', h, 'T:' .. k) or '0') end
  for i = 1, nw do
    if windows[i] > 0 then
      for k = 1, K do
        out[#out + 1] = tonumber(redis.call('HGET', h, 'W' .. windows[i] .. ':' .. k) or '0')
      end
    end
  end
end
local hist = {}
if user ~= '' and max_len > 0 then
  hist = redis.call('ZREVRANGEBYSCORE', p .. 'h:' .. user, '(' .. ARGV[4], '-inf',
    'WITHSCORES', 'LIMIT', 0, max_len)
end
return {out, hist}
"""
)

# ARGV: prefix, clock key, bucket_us, delay_us, width, n_counts, then per count: table, key, t_us,
# kinds, counts...; then per history write: kind ('click' or 'order'), user, t_us, position,
# item, ordered (0/1).
_OBSERVE = (
    _COMMON
    + """
local delay, width, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local B = clock_bucket()
local a = 7
for _ = 1, n do
  local h = p .. 'c:' .. ARGV[a] .. ':' .. ARGV[a + 1]
  local z = p .. 'z:' .. ARGV[a] .. ':' .. ARGV[a + 1]
  local e = math.max(bucket_of(tonumber(ARGV[a + 2]) + delay), B)
  local K = tonumber(ARGV[a + 3])
  redis.call('HSETNX', h, 'B', B)  -- a new key's totals are as of now: nothing closed
  redis.call('ZADD', z, e, e)
  for k = 1, K do
    local c = tonumber(ARGV[a + 3 + k])
    if c ~= 0 then redis.call('HINCRBY', h, 'b:' .. e .. ':' .. k, c) end
  end
  a = a + 4 + K
end
local function member(pos, ordered, item)
  local seq = redis.call('INCR', p .. 'hseq')
  return string.format('%010d|%020d|%d|', pos, seq, ordered) .. item
end
while a <= #ARGV do
  local kind, hk, t = ARGV[a], p .. 'h:' .. ARGV[a + 1], ARGV[a + 2]
  local pos, item, ordered = tonumber(ARGV[a + 3]), ARGV[a + 4], tonumber(ARGV[a + 5])
  a = a + 6
  local marked = false
  if kind == 'order' then  -- flag the latest click on this item at this time, if any
    local same = redis.call('ZRANGEBYSCORE', hk, t, t)
    for i = #same, 1, -1 do
      local m = same[i]
      if string.sub(m, 35) == item then
        redis.call('ZREM', hk, m)
        redis.call('ZADD', hk, t, string.sub(m, 1, 32) .. '1|' .. item)
        marked = true
        break
      end
    end
    if not marked then pos, ordered = 0, 1 end
  end
  if not marked then
    redis.call('ZADD', hk, t, member(pos, ordered, item))
    if redis.call('ZCARD', hk) > width then redis.call('ZPOPMIN', hk) end
  end
end
return 1
"""
)


@dataclass(frozen=True)
class CountWrite:
    """Counts of one event for one counter key (``CounterTable.add`` of one row)."""

    table: str
    key: int  # the uint64 key
    t_us: int  # the event's time (its bucket adds the delay)
    counts: tuple[int, ...]  # one per kind of the table


@dataclass(frozen=True)
class HistoryWrite:
    """A click (``HistoryStore.add``) or an order on its own (``mark_ordered``)."""

    kind: str  # "click" | "order"
    user: str
    t_us: int
    position: int
    item: str
    ordered: bool


class RedisState:
    """Counters of several tables and the users' sequences, in one Redis."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        clock_key: str,
        kinds: dict[str, int],
        windows: Sequence[int | None],
        bucket_us: int,
        delay_us: int,
        max_len: int,
    ):
        self.r, self.p, self.clock_key = client, prefix, clock_key
        self.kinds = kinds  # table -> number of event kinds it counts
        self.windows = list(windows)
        self.bucket_us, self.delay_us, self.max_len = bucket_us, delay_us, max_len
        self._lookup = client.register_script(_LOOKUP)
        self._observe = client.register_script(_OBSERVE)

    def observe(self, counts: Sequence[CountWrite], history: Sequence[HistoryWrite]) -> None:
        """Apply events atomically: no read sees part of them."""
        args: list[Any] = [self.p, self.clock_key, self.bucket_us, self.delay_us]
        args += [2 * self.max_len, len(counts)]
        for c in counts:
            if len(c.counts) != self.kinds[c.table]:
                raise ValueError(f"table {c.table} counts {self.kinds[c.table]} kinds")
            args += [c.table, f"{c.key:x}", c.t_us, len(c.counts), *c.counts]
        for h in history:
            args += [h.kind, h.user, h.t_us, h.position, h.item, int(h.ordered)]
        self._observe(keys=[], args=args)

    def lookup(
        self, t_us: int, keys: Sequence[tuple[str, int]], user: str | None
    ) -> tuple[list[dict[int | None, np.ndarray]], Sequences]:
        """As of ``t_us`` (the shared clock moves there, never back): per (table, key), counts
        per window ``{window: (K,)}`` as ``CounterTable.lookup`` gives them; the user's last
        ``max_len`` clicks before ``t_us`` as ``HistoryStore.lookup`` gives them."""
        finite = [w for w in self.windows if w is not None]
        args: list[Any] = [self.p, self.clock_key, self.bucket_us, t_us, len(finite), *finite]
        args.append(self.max_len)
        args.append(user or "")
        for table, key in keys:
            args += [table, f"{key:x}", self.kinds[table]]
        flat, hist = self._lookup(keys=[], args=args)
        out, j = [], 0
        for table, _ in keys:
            k = self.kinds[table]
            total = np.array(flat[j : j + k], np.int64)
            j += k
            per: dict[int | None, np.ndarray] = {}
            for w in self.windows:
                if w is None:
                    per[w] = total
                else:
                    per[w] = np.array(flat[j : j + k], np.int64)
                    j += k
            out.append(per)
        return out, _sequences(hist)

    def history(self, user: str) -> Sequences:
        """The user's last ``max_len`` stored clicks (a read: the clock does not move)."""
        flat = self.r.zrevrangebyscore(
            self.p + "h:" + user, "+inf", "-inf", start=0, num=self.max_len, withscores=True
        )
        return _sequences([x for pair in flat for x in pair])


def _sequences(flat: list[Any]) -> Sequences:
    """ZREVRANGEBYSCORE ... WITHSCORES (newest first) as a one-request ``Sequences``."""
    members = [str(m) for m in flat[0::2]][::-1]
    times = [int(float(s)) for s in flat[1::2]][::-1]
    return Sequences(
        offsets=np.array([0, len(members)], np.int64),
        item_id=np.array([m[34:] for m in members], dtype=object),
        t_us=np.array(times, np.int64),
        ordered=np.array([m[32] == "1" for m in members], bool),
    )
