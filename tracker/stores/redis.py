"""All coordinator state in Redis, so several coordinator replicas answer alike.

Keys (prefix ``shoal:``): ``manifest:<digest>``, ``torrent:<v1 hex>`` with
``torrent-v2:<hex>``/``torrent-v2s:<hex>`` pointing at it, ``swarms`` (set of
announce keys), ``tag:<ref>`` (history list), ``tags`` (set), ``peers:<hash>``
(hash ip|port -> peer), ``downloaded:<hash>``, ``avail:<swarm>`` (hash host ->
bitfield record), ``assign:<swarm>`` (hash chunk -> assignment), ``edges``.
Read-modify-write steps on one swarm run under a short per-swarm lock.
"""

from __future__ import annotations

import asyncio
import functools
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shoal import bitfield
from shoal.digest import Digest
from shoal.errors import AuthError, Conflict, RemoteError
from shoal.manifest import Manifest
from shoal.ref import ModelRef
from tracker.announce import PeerAddr
from tracker.assign import Assignment, decide
from tracker.settings import TrackerSettings
from tracker.stores.base import (
    MAX_AUDIT,
    AnnounceResult,
    AuditEntry,
    EdgeRecord,
    Holder,
    SwarmStats,
    TagRecord,
    short_v2,
)

P = "shoal:"
_LOCK_MS = 5000
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_MOVE_TAG = """
local last = redis.call('lindex', KEYS[1], -1)
if last then
  local entry = cmsgpack.unpack(last)
  if entry[1] == ARGV[1] then return 0 end
end
redis.call('rpush', KEYS[1], ARGV[2])
redis.call('sadd', KEYS[2], ARGV[3])
return 1
"""


def _pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _unpack(data: Any) -> Any:
    return msgpack.unpackb(data, raw=False)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisState:
    """One connection pool shared by the three store facets below."""

    def __init__(self, url: str) -> None:
        self.r = aioredis.Redis.from_url(url, decode_responses=False)
        self._rng = random.Random()  # noqa: S311 - peer sampling, not secrets

    async def close(self) -> None:
        await self.r.aclose()

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        key, token = f"{P}lock:{name}", secrets.token_hex(8)
        for _ in range(500):
            if await self.r.set(key, token, nx=True, px=_LOCK_MS):
                break
            await asyncio.sleep(0.01)
        else:
            raise RemoteError(f"swarm {name} is busy", "retry in a moment")
        try:
            yield
        finally:
            await self.r.eval(_RELEASE, 1, key, token)


def _guard(fn: Any) -> Any:
    """Redis failures become ``RemoteError`` (HTTP 502 with a clear message)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except RedisError as exc:
            raise RemoteError(
                f"redis is unavailable: {exc}", "check --redis and its server"
            ) from None

    return wrapper


# one signature per key and manifest, the newest: fields KEY (the body) and KEY@ (its
# signed_at), replaced only by a newer one, in one step
_NEWER_SIGNATURE = """
local at = redis.call('HGET', KEYS[1], ARGV[1] .. '@')
if at and tonumber(at) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. '@', ARGV[2])
return 1
"""


class RedisRegistry:
    def __init__(self, state: RedisState) -> None:
        self.s = state

    @_guard
    async def put(self, ref: ModelRef, manifest: Manifest, torrent: bytes, now: float) -> bool:
        r, v1, v2 = self.s.r, manifest.info_hash_v1, manifest.info_hash_v2
        async with r.pipeline(transaction=True) as p:
            p.set(f"{P}manifest:{manifest.digest}", manifest.canonical_bytes, nx=True)
            p.set(f"{P}torrent:{v1.hex()}", torrent, nx=True)
            p.sadd(f"{P}swarms", v1)
            for f in manifest.files:
                p.set(f"{P}blob:{f.sha256}", str(manifest.digest), nx=True)
            if v2:
                p.set(f"{P}torrent-v2:{v2.hex()}", v1.hex(), nx=True)
                p.set(f"{P}torrent-v2s:{short_v2(v2).hex()}", v1.hex(), nx=True)
                p.sadd(f"{P}swarms", short_v2(v2))
            await p.execute()
        entry = _pack([str(manifest.digest), now])
        moved = await r.eval(
            _MOVE_TAG, 2, f"{P}tag:{ref}", f"{P}tags", str(manifest.digest), entry, str(ref)
        )
        return bool(moved)

    @_guard
    async def resolve(self, ref: ModelRef) -> Digest | None:
        last = await self.s.r.lindex(f"{P}tag:{ref}", -1)
        if last is None:
            return None
        digest = _unpack(last)[0]
        return Digest.parse(digest) if digest else None

    @_guard
    async def manifest(self, digest: Digest) -> bytes | None:
        data = await self.s.r.get(f"{P}manifest:{digest}")
        return _bytes(data)

    @_guard
    async def add_signature(
        self, digest: Digest, key_id: str, signed_at: int, signature: bytes
    ) -> None:
        await self.s.r.eval(
            _NEWER_SIGNATURE, 1, f"{P}signatures:{digest}", key_id, signed_at, signature
        )

    @_guard
    async def audit(self, entry: AuditEntry) -> None:
        row = _pack([entry.at, entry.who, entry.action, entry.ref, entry.digest])
        async with self.s.r.pipeline(transaction=True) as p:
            p.lpush(f"{P}audit", row)
            p.ltrim(f"{P}audit", 0, MAX_AUDIT - 1)
            await p.execute()

    @_guard
    async def audit_log(self, limit: int) -> list[AuditEntry]:
        rows = await self.s.r.lrange(f"{P}audit", 0, limit - 1)
        return [AuditEntry(*_unpack(r)) for r in rows]

    @_guard
    async def signatures(self, digest: Digest) -> list[bytes]:
        held = await self.s.r.hgetall(f"{P}signatures:{digest}")
        fields = {_text(k): v for k, v in held.items()}
        return [_bytes(fields[k]) or b"" for k in sorted(fields) if not k.endswith("@")]

    @_guard
    async def torrent(self, info_hash: bytes) -> bytes | None:
        r = self.s.r
        key = info_hash.hex()
        if len(info_hash) == 32:
            pointer = await r.get(f"{P}torrent-v2:{key}")
            key = _text(pointer) if pointer else ""
        elif len(info_hash) == 20 and not await r.exists(f"{P}torrent:{key}"):
            pointer = await r.get(f"{P}torrent-v2s:{key}")
            key = _text(pointer) if pointer else ""
        data = await r.get(f"{P}torrent:{key}") if key else None
        return _bytes(data)

    @_guard
    async def manifest_with_blob(self, blob: Digest) -> Digest | None:
        found = await self.s.r.get(f"{P}blob:{blob}")
        return Digest.parse(_text(found)) if found else None

    @_guard
    async def is_swarm(self, info_hash: bytes) -> bool:
        return bool(await self.s.r.sismember(f"{P}swarms", info_hash))  # type: ignore[arg-type]

    @_guard
    async def models(self) -> list[TagRecord]:
        refs = sorted(_text(x) for x in await self.s.r.smembers(f"{P}tags"))
        out = []
        for ref in refs:
            last = await self.s.r.lindex(f"{P}tag:{ref}", -1)
            if last is not None:
                digest, created = _unpack(last)
                if digest:
                    out.append(TagRecord(ref, Digest.parse(digest), created))
        return out

    @_guard
    async def history(self, ref: ModelRef) -> list[TagRecord]:
        entries = await self.s.r.lrange(f"{P}tag:{ref}", 0, -1)
        return [
            TagRecord(str(ref), Digest.parse(d) if d else None, c) for d, c in map(_unpack, entries)
        ]

    @_guard
    async def delete_tag(self, ref: ModelRef, now: float) -> bool:
        async with self.s.lock(f"tag:{ref}"):
            if await self.resolve(ref) is None:
                return False
            await self.s.r.rpush(f"{P}tag:{ref}", _pack([None, now]))
        return True

    async def close(self) -> None:
        await self.s.close()


class RedisSwarms:
    def __init__(self, state: RedisState, peer_ttl: float) -> None:
        self.s = state
        self.peer_ttl = peer_ttl

    @_guard
    async def announce(
        self, info_hash: bytes, peer: PeerAddr, left: int, event: str, numwant: int, now: float
    ) -> AnnounceResult:
        r, h = self.s.r, info_hash.hex()
        field = f"{peer.ip}|{peer.port}"
        async with r.pipeline(transaction=True) as p:
            if event == "stopped":
                p.hdel(f"{P}peers:{h}", field)
            else:
                p.hget(f"{P}peers:{h}", field)
                p.hset(f"{P}peers:{h}", field, _pack([peer.peer_id, left, now + self.peer_ttl]))
            p.hgetall(f"{P}peers:{h}")
            results = await p.execute()
        if event == "completed":
            old = _unpack(results[0]) if results[0] else None
            if old is None or old[1] != 0:
                await r.incr(f"{P}downloaded:{h}")
        peers, seeds, leechers, expired = [], 0, 0, []
        for key, value in results[-1].items():
            pid, p_left, expires = _unpack(value)
            if expires <= now:
                expired.append(key)
                continue
            seeds, leechers = (seeds + 1, leechers) if p_left == 0 else (seeds, leechers + 1)
            ip, port = _text(key).rsplit("|", 1)
            if _text(key) != field and (left != 0 or p_left != 0):
                peers.append(PeerAddr(ip, int(port), pid))
        if expired:
            await r.hdel(f"{P}peers:{h}", *expired)
        if len(peers) > numwant:
            peers = self.s._rng.sample(peers, numwant)
        return AnnounceResult(peers, seeds, leechers)

    @_guard
    async def scrape(self, info_hashes: list[bytes], now: float) -> list[SwarmStats]:
        stats = []
        for ih in info_hashes:
            h = ih.hex()
            entries = await self.s.r.hgetall(f"{P}peers:{h}")
            live = [_unpack(v) for v in entries.values()]
            live = [e for e in live if e[2] > now]
            seeds = sum(1 for e in live if e[1] == 0)
            downloaded = int(await self.s.r.get(f"{P}downloaded:{h}") or 0)
            stats.append(SwarmStats(ih, seeds, downloaded, len(live) - seeds))
        return stats

    @_guard
    async def census(self, now: float) -> list[SwarmStats]:
        hashes = []
        async for key in self.s.r.scan_iter(match=f"{P}peers:*", count=500):
            hashes.append(bytes.fromhex(_text(key).rsplit(":", 1)[1]))
        return [s for s in await self.scrape(hashes, now) if s.complete + s.incomplete]

    async def close(self) -> None:
        return None


class RedisFleet:
    def __init__(self, state: RedisState, host_ttl: float, assignment_ttl: float) -> None:
        self.s = state
        self.host_ttl = host_ttl
        self.assignment_ttl = assignment_ttl

    async def _hosts(self, swarm: str, now: float) -> dict[str, list[Any]]:
        entries = await self.s.r.hgetall(f"{P}avail:{swarm}")
        hosts, dead = {}, []
        for k, v in entries.items():
            rec = _unpack(v)
            if rec[3] > now:
                hosts[_text(k)] = rec
            else:
                dead.append(k)
        if dead:
            await self.s.r.hdel(f"{P}avail:{swarm}", *dead)
        return hosts

    @_guard
    async def report(
        self,
        swarm: str,
        host: str,
        ip: str,
        port: int | None,
        num_chunks: int,
        *,
        full: bytes | None,
        have: list[int],
        lost: list[int],
        now: float,
    ) -> None:
        async with self.s.lock(swarm):
            r = self.s.r
            if full is not None:
                bits = bitfield.apply(bitfield.check(full, num_chunks), have, lost, num_chunks)
                port = port or 0
            else:
                raw = await r.hget(f"{P}avail:{swarm}", host)
                old = _unpack(raw) if raw else None
                if old is None or old[3] <= now:
                    raise Conflict(
                        "no full bitfield on record for this host and swarm",
                        "send the full bitfield (PUT) before deltas",
                    )
                bits = bitfield.apply(old[2], have, lost, num_chunks)
                port = port or old[1]
            await r.hset(f"{P}avail:{swarm}", host, _pack([ip, port, bits, now + self.host_ttl]))
            assigned = await r.hgetall(f"{P}assign:{swarm}")
            done = [
                k
                for k, v in assigned.items()
                if _unpack(v)[0] == host and bitfield.has(bits, int(k))
            ]
            if done:
                await r.hdel(f"{P}assign:{swarm}", *done)

    @_guard
    async def replicas(self, swarm: str, num_chunks: int, now: float) -> list[int]:
        hosts = await self._hosts(swarm, now)
        return bitfield.count_replicas((h[2] for h in hosts.values()), num_chunks)

    @_guard
    async def holders(self, swarm: str, chunk: int, now: float) -> list[Holder]:
        hosts = await self._hosts(swarm, now)
        return [
            Holder(name, h[0], h[1])
            for name, h in sorted(hosts.items())
            if bitfield.has(h[2], chunk)
        ]

    @_guard
    async def assign(
        self,
        swarm: str,
        host: str,
        num_chunks: int,
        want: int,
        now: float,
        skip: bytes | None = None,
        unproven: bytes | None = None,
    ) -> tuple[list[int], float]:
        async with self.s.lock(swarm):
            r = self.s.r
            hosts = await self._hosts(swarm, now)
            live: dict[int, Assignment] = {}
            stale = []
            for k, v in (await r.hgetall(f"{P}assign:{swarm}")).items():
                owner, expires = _unpack(v)
                if expires > now:
                    live[int(k)] = Assignment(int(k), owner, expires)
                else:
                    stale.append(k)
            me = hosts.get(host)
            d = decide(
                host=host,
                num_chunks=num_chunks,
                have=me[2] if me else None,
                replicas=bitfield.count_replicas((h[2] for h in hosts.values()), num_chunks),
                live=live,
                want=want,
                now=now,
                ttl=self.assignment_ttl,
                skip=skip,
                unproven=unproven,
            )
            async with r.pipeline(transaction=True) as p:
                if stale:
                    p.hdel(f"{P}assign:{swarm}", *stale)
                if d.chunks:
                    p.hset(
                        f"{P}assign:{swarm}",
                        mapping={str(c): _pack([host, d.expires]) for c in d.chunks},
                    )
                await p.execute()
        return d.chunks, d.expires

    @_guard
    async def register_edge(self, edge: EdgeRecord, now: float) -> None:
        async with self.s.lock("edges"):
            raw = await self.s.r.hget(f"{P}edges", edge.url)
            if raw is not None:
                old = _unpack(raw)
                if old["owner"] != edge.owner and old["expires"] > now:
                    raise AuthError(f"{edge.url} is registered by another host", status=403)
            await self.s.r.hset(
                f"{P}edges",
                edge.url,
                _pack(
                    {
                        "url": edge.url,
                        "kind": edge.kind,
                        "labels": edge.labels,
                        "capacity": edge.capacity,
                        "owner": edge.owner,
                        "expires": edge.expires,
                    }
                ),
            )

    @_guard
    async def edges(self, now: float) -> list[EdgeRecord]:
        out, dead = [], []
        for url, raw in (await self.s.r.hgetall(f"{P}edges")).items():
            e = _unpack(raw)
            if e["expires"] > now:
                out.append(
                    EdgeRecord(
                        e["url"], e["kind"], e["labels"], e["capacity"], e["owner"], e["expires"]
                    )
                )
            else:
                dead.append(url)
        if dead:
            await self.s.r.hdel(f"{P}edges", *dead)
        return out

    async def close(self) -> None:
        return None


def redis_stores(settings: TrackerSettings) -> tuple[RedisRegistry, RedisSwarms, RedisFleet]:
    assert settings.redis is not None
    state = RedisState(settings.redis)
    return (
        RedisRegistry(state),
        RedisSwarms(state, settings.peer_ttl),
        RedisFleet(state, settings.availability_ttl, settings.assignment_ttl),
    )
