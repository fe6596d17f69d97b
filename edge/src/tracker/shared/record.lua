-- Records one verified announce in the shared tracker, atomically, in one round trip
-- (docs/protocol.md §3.3, docs/architecture.md "The shared tracker"). The same rules as the
-- in-memory tracker's `Tracker::record` (edge/src/tracker/mod.rs), which the tests of both
-- hold to the same cases.
--
-- ARGV[1] says which parts run: 'pt' both (one Redis: one call per announce); on a cluster,
-- where a script touches one slot (keys.rs), first 'p' on the peer's bucket and, when it
-- records, 'ta' once per bucket of the announce's tracks: 'a' keeps each track's peers'
-- addresses beside it, so that a lookup is one call on one slot there too.
--
-- 'p':  KEYS[1]  the peer:   HASH a = addresses (JSON), ts = signed time, c = content digest
--       KEYS[2]  the live peers (of the peer's bucket): ZSET id -> when it expires (ms)
-- 't':  next     the live tracks (of these tracks' bucket): ZSET id -> when it expires (ms)
--       then per track two keys: ZSET peer id -> last announce (ms, Redis clock),
--                                 HASH peer id -> source network
--       and with 'a' a third:    HASH peer id -> addresses (JSON)
-- ARGV[2..]: peer id, addresses (JSON), signed time, content digest, source network, ttl (ms),
--       peers per track, peers per track per network, peers at most, tracks at most (both
--       per bucket on a cluster), then the track ids in the order of their keys
-- Returns 1 (recorded), 0 (a replay: this announce, or a newer one of the peer, is recorded)
-- or 2 (a new peer while the tracker holds as many live peers as it may). 't' alone returns 1.

-- Redis 5 and 6 replicate a script that read the clock by its effects only when asked.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local mode = ARGV[1]
local peer, addrs, ts, content, net = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local ttl, per_track, per_network = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local max_peers, max_tracks = tonumber(ARGV[10]), tonumber(ARGV[11])
local first_track = 12

local k = 1
if string.find(mode, 'p', 1, true) then
  local old = redis.call('HMGET', KEYS[1], 'ts', 'c')
  if old[1] then
    local old_ts = tonumber(old[1])
    if old_ts > ts or (old_ts == ts and old[2] == content) then
      return 0
    end
  end
  -- The table bound on live peers, each remembered until it expires.
  local all_peers = KEYS[2]
  redis.call('ZREMRANGEBYSCORE', all_peers, '-inf', now)
  if not redis.call('ZSCORE', all_peers, peer) and redis.call('ZCARD', all_peers) >= max_peers then
    return 2
  end
  redis.call('ZADD', all_peers, now + ttl, peer)
  redis.call('PEXPIRE', all_peers, ttl)
  redis.call('HSET', KEYS[1], 'a', addrs, 'ts', ARGV[4], 'c', content)
  redis.call('PEXPIRE', KEYS[1], ttl)
  k = 3
end
if not string.find(mode, 't', 1, true) then
  return 1
end

-- The table bound on live tracks, likewise.
local all_tracks = KEYS[k]
redis.call('ZREMRANGEBYSCORE', all_tracks, '-inf', now)
local stride = string.find(mode, 'a', 1, true) and 3 or 2
-- Removes `who` (a list) from the track's keys.
local function drop(z, h, a, who)
  redis.call('ZREM', z, unpack(who))
  redis.call('HDEL', h, unpack(who))
  if a then redis.call('HDEL', a, unpack(who)) end
end
for i = k + 1, #KEYS, stride do
  local z, h = KEYS[i], KEYS[i + 1]
  local a = stride == 3 and KEYS[i + 2] or nil
  local track = ARGV[first_track + (i - k - 1) / stride]
  -- A new track while the table is full of live ones is not remembered.
  if redis.call('ZSCORE', all_tracks, track) or redis.call('ZCARD', all_tracks) < max_tracks then
  redis.call('ZADD', all_tracks, now + ttl, track)
  redis.call('PEXPIRE', all_tracks, ttl)
  -- Forget entries that expired (an entry lives while now - seen < ttl).
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now - ttl)
  if #dead > 0 then
    drop(z, h, a, dead)
  end
  if not redis.call('ZSCORE', z, peer) then
    -- Stalest first.
    local members = redis.call('ZRANGE', z, 0, -1)
    local victim = nil
    if #members > 0 then
      local nets = redis.call('HMGET', h, unpack(members))
      local counts, own = {}, 0
      for j = 1, #members do
        local n = nets[j] or ''
        counts[n] = (counts[n] or 0) + 1
      end
      own = counts[net] or 0
      if own >= per_network then
        -- Its network has its share: the newcomer replaces that network's stalest.
        for j = 1, #members do
          if nets[j] == net then victim = members[j]; break end
        end
      elseif #members >= per_track then
        -- Full: the stalest entry of the networks holding the most, its own first when it is
        -- one of them; a network is never displaced by one that would then hold more.
        local most = 0
        for _, c in pairs(counts) do
          if c > most then most = c end
        end
        for j = 1, #members do
          local n = nets[j] or ''
          if (own == most and n == net) or (own ~= most and counts[n] == most) then
            victim = members[j]; break
          end
        end
      end
    end
    if victim then
      drop(z, h, a, {victim})
    end
  end
  redis.call('ZADD', z, now, peer)
  redis.call('HSET', h, peer, net)
  redis.call('PEXPIRE', z, ttl)
  redis.call('PEXPIRE', h, ttl)
  if a then
    redis.call('HSET', a, peer, addrs)
    redis.call('PEXPIRE', a, ttl)
  end
  end
end
return 1
