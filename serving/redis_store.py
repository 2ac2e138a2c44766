"""The shared store in Redis, for ``ranker serve`` replicas on several machines.

The same contract as the embedded SQLite store (``serving.store.SharedStore``): served
rankings, the events posted, the reload generation and pinned models, workers and leases.
Replicas on any machine that reach one Redis see each other's events and reloads.

Layout, every key under one prefix (``ranker:`` by default), on one Redis instance (the
scripts name keys they build themselves, so this is not for Redis Cluster):
- ``control``: a hash (generation, models, snapshot, checkpoint, probe);
- ``req:<request_id>``: a hash per served ranking, expiring after ``served_ttl_s``; ``reqs``: a
  sorted set of their creation times, for the size bound and the counts;
- ``events``: a stream, entry ``<id>-0`` per event, ids from the counter ``event_id``, so a
  replica reads the events after its last one with one XRANGE; ``ek:<key>``: an event's
  idempotency key, kept as long as rankings are, so a retry is stored once;
- ``clock``: the latest ranking time any replica served (see ``serving.store_rows.Poll``);
- ``workers``: a hash, worker id -> JSON; ``worker_seq`` numbers workers across machines
  (a pid is not unique there); ``lease:<name>``: a key with a TTL.

Each write is one Lua script, which Redis runs without interleaving another client's
commands, so a write is all or nothing with respect to every reader. Every Redis error
(down, timeout, out of memory) becomes ``StoreError``, which the service already answers with
a 503 on ``/v1/events`` and a degraded ranking on ``/v1/rank``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from serving.redis_state import APPLY_LUA
from serving.served_record import RECORD_LUA
from serving.store_rows import (
    SEP,
    EventRow,
    NewEvent,
    Poll,
    Served,
    ServedRanking,
    StoreError,
    WorkerRow,
    now_us,
)

TIMEOUT_S = 2.0  # a request waits at most this long for Redis before it is answered degraded

# ARGV: prefix, ttl, n, stream (1: append to the events stream, which replicas replay; 0:
# stateless replicas read the state instead), then the state's ``apply`` arguments (empty
# without a state), then per event its 9 fields and its state writes as JSON ('' for none).
_ADD_EVENTS = (
    APPLY_LUA
    + """
local p, ttl, n, stream = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local sp, clock_key, bus, delay, width, nw = ARGV[5], ARGV[6], tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local fresh = {}
for j = 0, n - 1 do
  local a = 11 + j * 10
  local key = ARGV[a + 8]
  local new = key == '' or redis.call('SET', p .. 'ek:' .. key, '1', 'NX', 'PX', ttl)
  if new then
    if stream then
      local id = redis.call('INCR', p .. 'event_id')
      redis.call('XADD', p .. 'events', id .. '-0', 'type', ARGV[a], 'rid', ARGV[a + 1],
        'user', ARGV[a + 2], 'item', ARGV[a + 3], 'pos', ARGV[a + 4], 't', ARGV[a + 5],
        'query', ARGV[a + 6], 'variant', ARGV[a + 7])
    end
    if ARGV[a + 9] ~= '' then
      apply(sp, clock_key, bus, delay, width, nw, cjson.decode(ARGV[a + 9]))
    end
    fresh[#fresh + 1] = 1
  else
    fresh[#fresh + 1] = 0
  end
end
return fresh
"""
)

_RECORD_REQUEST = RECORD_LUA + "return record(unpack(ARGV, 1, 9))\n"

_PUBLISH = """
local p = ARGV[1]
local gen = tonumber(redis.call('HGET', p .. 'control', 'generation') or '0')
if ARGV[2] == '1' then gen = gen + 1 end
redis.call('HSET', p .. 'control', 'generation', tostring(gen), 'models', ARGV[3])
return gen
"""

_RESET = """
local p, snap = ARGV[1], ARGV[2]
if redis.call('HGET', p .. 'control', 'snapshot') == snap then return 0 end
local rids = redis.call('ZRANGE', p .. 'reqs', 0, -1)
for i = 1, #rids do redis.call('DEL', p .. 'req:' .. rids[i]) end
redis.call('DEL', p .. 'reqs', p .. 'events')
redis.call('HDEL', p .. 'control', 'checkpoint')
redis.call('HSET', p .. 'control', 'snapshot', snap)
return 1
"""

_CLAIM = """
local k = ARGV[1] .. 'lease:' .. ARGV[2]
local owner = redis.call('GET', k)
if owner and owner ~= ARGV[3] then return 0 end
redis.call('SET', k, ARGV[3], 'PX', tonumber(ARGV[4]))
return 1
"""

_SET_CHECKPOINT = """
local k = ARGV[1] .. 'control'
local raw = redis.call('HGET', k, 'checkpoint')
if raw and tonumber(cjson.decode(raw)['event_id']) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', k, 'checkpoint', ARGV[2])
return 1
"""


class RedisStore:
    """``SharedStore``'s contract over Redis (``redis://HOST:PORT/DB``)."""

    shares_files = False  # replicas on other machines cannot read this machine's checkpoints

    def __init__(self, url: str, served_ttl_s: float, prefix: str = "ranker:"):
        self.url, self.p = url, prefix
        self._state_args: list[Any] = []
        self._ttl_ms = max(1, int(served_ttl_s * 1000))
        try:
            # Any: redis-py annotates replies as bytes or str alike; with decode_responses
            # every reply here is str.
            self._r: Any = redis.Redis.from_url(
                url,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                decode_responses=True,
            )
            self._scripts = {
                name: self._r.register_script(src)
                for name, src in (
                    ("add_events", _ADD_EVENTS),
                    ("record", _RECORD_REQUEST),
                    ("publish", _PUBLISH),
                    ("reset", _RESET),
                    ("claim", _CLAIM),
                    ("checkpoint", _SET_CHECKPOINT),
                )
            }
            self._r.ping()
        except (redis.RedisError, ValueError) as e:
            raise StoreError(f"{_safe(url)}: cannot reach the store: {e}") from e

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as e:
            raise StoreError(f"{what} failed ({_safe(self.url)}): {e}") from e

    def _run(self, script: str, args: Sequence[Any]) -> Any:
        with self._call(script):
            return self._scripts[script](keys=[], args=[self.p, *args])

    @property
    def client(self) -> Any:
        return self._r

    def close(self) -> None:
        self._r.close()

    def worker_id(self, pid: int) -> int:
        """A number no other worker of any machine has (pids repeat across machines)."""
        with self._call("register"):
            return int(self._r.incr(self.p + "worker_seq"))

    def alive(self, worker: int) -> bool:
        return True  # another machine's process: only its heartbeat tells

    # ---- control ---------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        with self._call("read"):
            v = self._r.hget(self.p + "control", key)
        return default if v is None else str(v)

    def set(self, key: str, value: str) -> None:
        with self._call("write"):
            self._r.hset(self.p + "control", key, value)

    def generation(self) -> int:
        return int(self.get("generation", "0") or 0)

    def pinned_models(self) -> dict[str, str] | None:
        raw = self.get("models")
        return None if raw is None else dict(json.loads(raw))

    def publish_models(self, versions: dict[str, str], bump: bool) -> int:
        models = json.dumps(versions, sort_keys=True)
        return int(self._run("publish", ["1" if bump else "0", models]))

    def reset_for(self, snapshot: str) -> bool:
        return bool(self._run("reset", [snapshot]))

    def probe(self) -> None:
        self.set("probe", str(now_us()))

    # ---- requests and events ---------------------------------------------------------------
    def record_request(self, ranking: ServedRanking) -> bool:
        args = self.record_args(ranking)
        with self._call("record"):
            return bool(self._scripts["record"](keys=[], args=args))

    def record_args(self, ranking: ServedRanking) -> list[Any]:
        """``RECORD_LUA``'s arguments: for this store's script, or to ride a state read."""
        return [self.p, *ranking.fields(), self._ttl_ms, now_us()]

    def served(self, request_ids: Sequence[str]) -> dict[str, Served]:
        rids = sorted(set(request_ids))
        with self._call("read"):
            pipe = self._r.pipeline(transaction=False)
            for rid in rids:
                pipe.hmget(self.p + "req:" + rid, ["user", "query", "t", "variant", "cands"])
            replies = pipe.execute()
        out: dict[str, Served] = {}
        for rid, (user, query, t, variant, cands) in zip(rids, replies, strict=True):
            if user is None:
                continue
            items = cands.split(SEP) if cands else []
            out[rid] = Served(user, query, int(t), variant, frozenset(items), len(items))
        return out

    def attach_state(self, apply_args: list[Any]) -> None:
        """Stateless replicas: events update the state in Redis (``RedisState.apply_args``),
        in the same script that checks their idempotency keys, instead of a stream to replay."""
        self._state_args = list(apply_args)

    def add_events(
        self, rows: Sequence[NewEvent], effects: Sequence[str] | None = None
    ) -> list[bool]:
        """As ``SharedStore.add_events``; ``effects``: per row, its state writes (JSON, see
        ``serving.redis_state.APPLY_LUA``), applied only when the row is new."""
        state = self._state_args or ["", "", 0, 0, 0, 0]
        args: list[Any] = [self._ttl_ms, len(rows), "0" if self._state_args else "1", *state]
        for j, (kind, rid, user, item, pos, t_us, query, variant, key) in enumerate(rows):
            args += [kind, rid, user, item, "" if pos is None else pos, t_us, query, variant]
            args += [key, effects[j] if effects is not None else ""]
        return [bool(x) for x in self._run("add_events", args)]

    def poll(self, last_id: int) -> Poll:
        if self._state_args:
            # Stateless replicas: no stream to replay, and the state's read moves the clock
            # itself, so a ranking needs no round trip here.
            return Poll(False, 0)
        with self._call("read"):
            newest, clock = self._r.mget(self.p + "event_id", self.p + "clock")
        return Poll(int(newest or 0) > last_id, int(clock or 0))

    def events_since(self, last_id: int, limit: int = 100_000) -> list[EventRow]:
        with self._call("read"):
            entries = self._r.xrange(self.p + "events", f"({last_id}-0", "+", count=limit)
        return [
            EventRow(
                int(eid.split("-")[0]),
                f["type"],
                f["rid"],
                f["user"],
                f["item"],
                int(f["pos"]) if f["pos"] else None,
                int(f["t"]),
                f["query"],
                f["variant"],
            )
            for eid, f in entries
        ]

    def last_event_id(self) -> int:
        with self._call("read"):
            return int(self._r.get(self.p + "event_id") or 0)

    # ---- workers, leases, checkpoints ------------------------------------------------------
    def register_worker(self, worker: int, started_us: int) -> str | None:
        raw = self.get("checkpoint")
        event_id = int(json.loads(raw)["event_id"]) if raw else 0
        self.heartbeat(worker, started_us, 0, event_id, {})
        return raw

    def claim(self, name: str, worker: int, ttl_s: float) -> bool:
        return bool(self._run("claim", [name, str(worker), max(1, int(ttl_s * 1000))]))

    def set_checkpoint(self, raw: str, event_id: int) -> bool:
        return bool(self._run("checkpoint", [raw, event_id]))

    def heartbeat(
        self,
        worker: int,
        started_us: int,
        generation: int,
        last_event: int,
        models: dict[str, str],
    ) -> None:
        row = {
            "started_us": started_us,
            "seen_us": now_us(),
            "generation": generation,
            "last_event": last_event,
            "models": models,
        }
        with self._call("write"):
            self._r.hset(self.p + "workers", str(worker), json.dumps(row))

    def workers(self) -> list[WorkerRow]:
        with self._call("read"):
            raw = self._r.hgetall(self.p + "workers")
        rows = [(int(k), json.loads(v)) for k, v in raw.items()]
        return [
            WorkerRow(k, d["seen_us"], d["generation"], d["last_event"], d["models"])
            for k, d in sorted(rows)
        ]

    def forget_worker(self, worker: int) -> None:
        with self._call("write"):
            self._r.hdel(self.p + "workers", str(worker))

    # ---- retention -------------------------------------------------------------------------
    def prune(
        self,
        served_before_us: int,
        max_served: int,
        events_upto: int,
        workers_before_us: int,
        chunk: int = 5000,
    ) -> int:
        """As ``SharedStore.prune``; rankings also expire on their own after the TTL."""
        reqs = self.p + "reqs"
        deleted = 0
        with self._call("retention"):
            newest = self._r.zrevrange(reqs, max_served, max_served, withscores=True)
            cutoff = max(served_before_us, int(newest[0][1]) + 1 if newest else 0)
            while old := self._r.zrangebyscore(reqs, "-inf", f"({cutoff}", start=0, num=chunk):
                pipe = self._r.pipeline(transaction=True)
                pipe.delete(*(self.p + "req:" + rid for rid in old))
                pipe.zrem(reqs, *old)
                pipe.execute()
                deleted += len(old)
            if events_upto > 0:
                deleted += int(
                    self._r.xtrim(
                        self.p + "events", minid=f"{events_upto + 1}-0", approximate=False
                    )
                )
            for row in self.workers():
                if row.seen_us < workers_before_us:
                    self.forget_worker(row.pid)
        return deleted

    def counts(self) -> dict[str, int]:
        with self._call("read"):
            return {
                "requests": int(self._r.zcard(self.p + "reqs")),
                "events": int(self._r.xlen(self.p + "events")),
                "workers": int(self._r.hlen(self.p + "workers")),
            }


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
