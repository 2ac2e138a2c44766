"""Counters and behaviour sequences in Redis, with the in-memory state's exact semantics: the
storage stateless replicas read in one round trip per ranking (the served ranking's record
rides in it; counter keys already read at the clock's bucket are not asked again, see
``serving.bucket_cache``). ``tests/serving/test_redis_state.py`` holds it to ``CounterTable``
and ``HistoryStore`` on the same events.

Counters (``pipelines.features.counters``). An event at time ``t`` falls in bucket
``(t + delay) // bucket``, but never before the current bucket (the shared clock's); a read
at clock bucket ``B`` sees buckets ``< B``, and a window of ``w`` buckets those ``>= B - w``.
Per table, ``s:<table>``, a hash of every key's summary, ``B,T...,W...``: the bucket it is
as of, its totals over buckets ``< B`` and its sums over ``[B - w, B)`` per finite window
(kinds each), so a read of 100 candidates is one HMGET per table. Per key, ``c:<table>:<key>``,
a hash of ``b:<bucket>:<k>`` counts for each bucket not yet out of every window, and
``z:<table>:<key>``, a sorted set of those buckets: a read brings a key from its ``B`` to the
clock's by visiting only the buckets that entered or left a window since, each added once and
subtracted once per window, as ``CounterTable.advance_to`` does.
Reads therefore write (the catch-up), inside the same script: no reader sees a half state.

Histories (``pipelines.features.history``): ``h:<user>``, a sorted set scored by time, each
member ``<position>|<sequence>|<ordered>|<item>`` (zero-padded numbers), so equal times sort
by position, then arrival; at most ``2 * max_len`` kept, the oldest dropped, as in memory.

Numbers: Lua reads Redis numbers as doubles, exact below 2**53 (microsecond times of this
century and counts are far below); buckets are computed with ``%``, not a float division.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.features.history import Sequences
from serving.bucket_cache import BucketCache
from serving.served_record import RECORD_LUA, RecordRide

_COMMON = """
local p, clock_key = ARGV[1], ARGV[2]
local bus = tonumber(ARGV[3])
local function bucket_of(t) return (t - t % bus) / bus end
local function clock_bucket()
  return bucket_of(tonumber(redis.call('GET', clock_key) or '0'))
end
"""

# ARGV: prefix, clock key, bucket_us, t_us, n_windows, finite windows..., max_len, user (''
# for none), then '1' and ``record``'s 9 arguments (a served ranking to record in the same
# trip) or '0', then per group of keys of one table: table, kinds, the keys (16 hex digits
# each, back to back: one argument rather than hundreds, whose encoding cost the client 0.5 ms,
# written by numpy rather than a format call per key). Returns {counts, history, B, recorded}:
# per group one string, comma-separated, per key its totals then each finite window's sums
# (kinds each; zeros for a key never counted), so the client parses a table in one numpy call;
# the history newest first as member, score pairs; the clock bucket read at; the record's
# outcome (1, 0: the request id is another user's; -1: none asked).
_LOOKUP = (
    RECORD_LUA
    + _COMMON
    + """
local t = tonumber(ARGV[4])
local clock = tonumber(redis.call('GET', clock_key) or '0')
if t > clock then redis.call('SET', clock_key, ARGV[4]); clock = t end
local B = bucket_of(clock)
-- A summary as of B starts so; none is ahead of the clock. A plain find makes no string.
local current = B .. ','
local nw = tonumber(ARGV[5])
local windows, wmax = {}, 0
for i = 1, nw do
  windows[i] = tonumber(ARGV[5 + i])
  if windows[i] > wmax then wmax = windows[i] end
end
local a = 6 + nw
local max_len, user = tonumber(ARGV[a]), ARGV[a + 1]
local recorded = -1  -- not asked
if ARGV[a + 2] == '1' then  -- a served ranking to record (``record``'s 9 arguments follow)
  recorded = record(unpack(ARGV, a + 3, a + 11))
  a = a + 9
end
a = a + 3

-- Bring one key's summary ``v`` (B, totals, window sums) from its bucket to B.
local function catch_up(tname, key, K, v)
  local h = p .. 'c:' .. tname .. ':' .. key
  local z = p .. 'z:' .. tname .. ':' .. key
  local Bk = v[1]
  for _, b in ipairs(redis.call('ZRANGEBYSCORE', z, Bk, B - 1)) do  -- newly closed
    for k = 1, K do
      local c = tonumber(redis.call('HGET', h, 'b:' .. b .. ':' .. k) or '0')
      if c ~= 0 then
        v[1 + k] = v[1 + k] + c
        for i = 1, nw do
          if tonumber(b) >= B - windows[i] then v[1 + K * i + k] = v[1 + K * i + k] + c end
        end
      end
    end
  end
  for i = 1, nw do  -- in window i at Bk ([Bk - w, Bk)), out of it now (< B - w)
    local w = windows[i]
    for _, b in ipairs(redis.call('ZRANGEBYSCORE', z, Bk - w, math.min(Bk, B - w) - 1)) do
      for k = 1, K do
        local c = tonumber(redis.call('HGET', h, 'b:' .. b .. ':' .. k) or '0')
        v[1 + K * i + k] = v[1 + K * i + k] - c
      end
    end
  end
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', B - wmax - 1)
  for _, b in ipairs(gone) do
    for k = 1, K do redis.call('HDEL', h, 'b:' .. b .. ':' .. k) end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', B - wmax - 1) end
  v[1] = B
end

local out = {}  -- per group, its keys' summaries as of B, in order, joined by commas
while a <= #ARGV do
  local tname, K = ARGV[a], tonumber(ARGV[a + 1])
  local packed, keys = ARGV[a + 2], {}
  for i = 1, #packed, 16 do  -- stored without leading zeros, as Python's format(key, 'x')
    keys[#keys + 1] = string.match(string.sub(packed, i, i + 15), '^0*(.+)$')
  end
  local n = #keys
  local zero = '0' .. string.rep(',0', K * (1 + nw))  -- a key never counted
  local group = {}
  a = a + 3
  local sums = p .. 's:' .. tname
  local got = n > 0 and redis.call('HMGET', sums, unpack(keys)) or {}
  local caught = {}  -- a key repeated in the group (user x category) is caught up once
  for i = 1, n do
    local g = caught[keys[i]] or got[i]
    if g and string.find(g, current, 1, true) ~= 1 then  -- behind B: parsed, caught up
      local v = {}
      for x in string.gmatch(g, '[^,]+') do v[#v + 1] = tonumber(x) end
      catch_up(tname, keys[i], K, v)
      g = table.concat(v, ',')
      redis.call('HSET', sums, keys[i], g)
      caught[keys[i]] = g
    end
    group[i] = g or zero
  end
  out[#out + 1] = table.concat(group, ',')
end
local hist = {}
if user ~= '' and max_len > 0 then
  hist = redis.call('ZREVRANGEBYSCORE', p .. 'h:' .. user, '(' .. ARGV[4], '-inf',
    'WITHSCORES', 'LIMIT', 0, max_len)
end
return {out, hist, B, recorded}
"""
)

# A Lua function applying one batch of writes ``eff`` (decoded JSON: ``c``, counter writes
# [table, key (hex), t_us (a string: Lua prints numbers past 2**47 inexactly), counts];
# ``h``, history writes [kind, user, t_us (string), position, item, ordered (0/1)]) to the state
# under prefix ``sp``. Shared by ``RedisState.observe`` and the event store's script, which
# applies an event's writes only when its idempotency key is new.
APPLY_LUA = """
local function apply(sp, clock_key, bus, delay, width, nw, eff)
  local function bucket_of(t) return (t - t % bus) / bus end
  local B = bucket_of(tonumber(redis.call('GET', clock_key) or '0'))
  for _, w in ipairs(eff['c'] or {}) do
    local h = sp .. 'c:' .. w[1] .. ':' .. w[2]
    local z = sp .. 'z:' .. w[1] .. ':' .. w[2]
    local e = math.max(bucket_of(tonumber(w[3]) + delay), B)
    -- a new key's summary: as of now (nothing closed yet), zero totals and sums
    redis.call('HSETNX', sp .. 's:' .. w[1], w[2], tostring(B) .. string.rep(',0', #w[4] * (1 + nw)))
    redis.call('ZADD', z, e, e)
    for k, c in ipairs(w[4]) do
      if c ~= 0 then redis.call('HINCRBY', h, 'b:' .. e .. ':' .. k, c) end
    end
  end
  for _, w in ipairs(eff['h'] or {}) do
    local kind, hk, t = w[1], sp .. 'h:' .. w[2], w[3]
    local pos, item, ordered = w[4], w[5], w[6]
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
      local seq = redis.call('INCR', sp .. 'hseq')
      redis.call('ZADD', hk, t, string.format('%010d|%020d|%d|', pos, seq, ordered) .. item)
      if redis.call('ZCARD', hk) > width then redis.call('ZPOPMIN', hk) end
    end
  end
end
"""

# ARGV: prefix, clock key, bucket_us, delay_us, history width, finite windows, the writes.
_OBSERVE = (
    APPLY_LUA
    + """
apply(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6]), cjson.decode(ARGV[7]))
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
        cache_keys: int = 100_000,
    ):
        self.r, self.p, self.clock_key = client, prefix, clock_key
        self.kinds = kinds  # table -> number of event kinds it counts
        self.windows = list(windows)
        self.bucket_us, self.delay_us, self.max_len = bucket_us, delay_us, max_len
        self._lookup = client.register_script(_LOOKUP)
        self._observe = client.register_script(_OBSERVE)
        finite = sum(w is not None for w in self.windows)
        self.cache = BucketCache({t: k * (1 + finite) for t, k in kinds.items()}, cache_keys)

    def observe(self, counts: Sequence[CountWrite], history: Sequence[HistoryWrite]) -> None:
        """Apply events atomically: no read sees part of them."""
        args = [*self.apply_args(), self.encode(counts, history)]
        self._observe(keys=[], args=args)

    def apply_args(self) -> list[Any]:
        """The arguments of ``APPLY_LUA``'s ``apply`` before the writes."""
        finite = sum(w is not None for w in self.windows)
        return [self.p, self.clock_key, self.bucket_us, self.delay_us, 2 * self.max_len, finite]

    def encode(self, counts: Sequence[CountWrite], history: Sequence[HistoryWrite]) -> str:
        """Writes as ``APPLY_LUA`` reads them."""
        for c in counts:
            if len(c.counts) != self.kinds[c.table]:
                raise ValueError(f"table {c.table} counts {self.kinds[c.table]} kinds")
        return json.dumps(
            {
                "c": [[c.table, f"{c.key:x}", str(c.t_us), list(c.counts)] for c in counts],
                "h": [
                    [h.kind, h.user, str(h.t_us), h.position, h.item, int(h.ordered)]
                    for h in history
                ],
            }
        )

    def lookup_groups(
        self,
        t_us: int,
        groups: Sequence[tuple[str, np.ndarray]],
        user: str | None,
        ride: RecordRide | None = None,
    ) -> tuple[list[dict[int | None, np.ndarray]], Sequences]:
        """As of ``t_us`` (the shared clock moves there, never back): for each group (a table
        and its keys, uint64), counts per window ``{window: (n, K)}`` as
        ``CounterTable.lookup`` gives them; the user's last ``max_len`` clicks before ``t_us``
        as ``HistoryStore.lookup`` gives them. One script call; keys this replica already read
        at the clock's bucket are not asked again (``BucketCache``). ``ride``: a served
        ranking recorded by the same script call (its outcome set on it)."""
        finite = [w for w in self.windows if w is not None]
        head: list[Any] = [self.p, self.clock_key, self.bucket_us, t_us, len(finite), *finite]
        head += [self.max_len, user or ""]
        c = self.cache
        with c.lock:
            c.at(max(t_us // self.bucket_us, c.bucket))  # where the shared clock is, at least
            ids = [c.find(table, keys) for table, keys in groups]  # -1: not cached
            missing = [keys[i < 0] for (_, keys), i in zip(groups, ids, strict=True)]
            summaries, hist, bucket = self._read(head, groups, missing, ride)
            if bucket != c.bucket:  # another replica moved the clock on: nothing cached holds
                c.at(bucket)
                ids = [np.full(len(keys), -1, np.int64) for _, keys in groups]
                missing = [keys for _, keys in groups]
                summaries, hist, bucket = self._read(head, groups, missing, None)
                c.at(bucket)  # all asked: whichever bucket this read was at, it is whole
            asked = sum(len(m) for m in missing)
            c.count(sum(len(keys) for _, keys in groups) - asked, asked)
            out = []
            for (table, keys), got, new, text in zip(groups, ids, missing, summaries, strict=True):
                if len(new):  # numpy's text parser: a tenth of split + np.array on 700 numbers
                    values = np.fromstring(text, dtype=np.int64, sep=",").reshape(len(new), -1)
                    got[got < 0] = c.put(table, new, values[:, 1:])  # 1:, each key's own bucket
                k = self.kinds[table]
                block = c.rows(table, got).reshape(len(keys), 1 + len(finite), k)
                sums = iter(range(1, 1 + len(finite)))
                out.append({w: block[:, 0 if w is None else next(sums)] for w in self.windows})
        return out, _sequences(hist)

    def _read(
        self,
        head: list[Any],
        groups: Sequence[tuple[str, np.ndarray]],
        keys: list[np.ndarray],
        ride: RecordRide | None,
    ) -> tuple[list[str], list[Any], int]:
        """One script call for the ``keys`` of each group (a group with none is not sent: its
        summary comes back as ``""``)."""
        args = [*head, "1", *ride.args] if ride is not None else [*head, "0"]
        sent = [j for j, asked in enumerate(keys) if len(asked)]
        for j in sent:
            args += [groups[j][0], self.kinds[groups[j][0]], _hex16(keys[j])]
        replies, hist, bucket, recorded = self._lookup(keys=[], args=args)
        if ride is not None:
            ride.mine = recorded == 1
        summaries = [""] * len(groups)
        for j, text in zip(sent, replies, strict=True):
            summaries[j] = text
        return summaries, hist, int(bucket)

    def lookup(
        self, t_us: int, keys: Sequence[tuple[str, int]], user: str | None
    ) -> tuple[list[dict[int | None, np.ndarray]], Sequences]:
        """``lookup_groups`` with one key per group: per (table, key), ``{window: (K,)}``."""
        groups = [(t, np.array([k], np.uint64)) for t, k in keys]
        per, seq = self.lookup_groups(t_us, groups, user)
        return [{w: v[0] for w, v in g.items()} for g in per], seq

    def history(self, user: str) -> Sequences:
        """The user's last ``max_len`` stored clicks (a read: the clock does not move)."""
        flat = self.r.zrevrangebyscore(
            self.p + "h:" + user, "+inf", "-inf", start=0, num=self.max_len, withscores=True
        )
        return _sequences([x for pair in flat for x in pair])


_HEX_PAIRS = np.array([f"{b:02x}".encode() for b in range(256)], dtype="S2")


def _hex16(keys: np.ndarray) -> bytes:
    """uint64 keys as 16 hex digits each, back to back (big-endian bytes, two digits each)."""
    be = np.ascontiguousarray(keys, dtype=np.uint64).astype(">u8")
    return _HEX_PAIRS[be.view(np.uint8)].tobytes()


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
