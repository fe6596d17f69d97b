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
--       then per track two keys: ZSET peer id -> when an announce last named it (ms, Redis
--                                 clock), HASH peer id -> source network, with '|h' after it
--                                 for an entry named as held (it lives the held ttl)
--       and with 'a' a third:    HASH peer id -> addresses (JSON)
-- ARGV[2..]: peer id, addresses (JSON), signed time, content digest, source network, ttl (ms),
--       held ttl (ms), peers per track, peers per track per network, peers at most, tracks at
--       most (both per bucket on a cluster), then the tracks in the order of their keys, each
--       prefixed by how it is announced: 'p' played, 'h' held (in the peer's cache: lives the
--       held ttl, takes only a free place), 'd' dropped (the peer's entry goes)
-- An entry is ordered (newest, stalest) by when it was last named, and lives the ttl after
-- that, or the held ttl when named as held (now or before: a holding played again stays a
-- holding); an earlier release wrote plain networks, which read as played entries.
-- Returns {status, plenty...}: status 1 (recorded), 0 (a replay: this announce, or a newer one
-- of the peer, is recorded) or 2 (a new peer while the tracker holds as many live peers as it
-- may); then the held tracks not listed, their list being full. 't' alone returns status 1.
--
-- An entry is answered while its peer is live too (peers.lua, on one Redis); the decisions here
-- skip entries of peers gone silent when a list is full, on one Redis, where the peer keys are
-- at hand (on a cluster they are in other slots: such an entry keeps its place until it
-- expires).

-- Redis 5 and 6 replicate a script that read the clock by its effects only when asked.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local mode = ARGV[1]
local peer, addrs, ts, content, net = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local ttl, held_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local per_track, per_network = tonumber(ARGV[9]), tonumber(ARGV[10])
local max_peers, max_tracks = tonumber(ARGV[11]), tonumber(ARGV[12])
local first_track = 13

-- Sets `key` to expire in `ms` unless it is set to live longer.
local function live_for(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

local k = 1
local one_redis = false
if string.find(mode, 'p', 1, true) then
  local old = redis.call('HMGET', KEYS[1], 'ts', 'c')
  if old[1] then
    local old_ts = tonumber(old[1])
    if old_ts > ts or (old_ts == ts and old[2] == content) then
      return {0}
    end
  end
  -- The table bound on live peers, each remembered until it expires.
  local all_peers = KEYS[2]
  redis.call('ZREMRANGEBYSCORE', all_peers, '-inf', now)
  if not redis.call('ZSCORE', all_peers, peer) and redis.call('ZCARD', all_peers) >= max_peers then
    return {2}
  end
  redis.call('ZADD', all_peers, now + ttl, peer)
  redis.call('PEXPIRE', all_peers, ttl)
  redis.call('HSET', KEYS[1], 'a', addrs, 'ts', ARGV[4], 'c', content)
  redis.call('PEXPIRE', KEYS[1], ttl)
  k = 3
  one_redis = true
end
if not string.find(mode, 't', 1, true) then
  return {1}
end
-- The prefix of peer keys, for the liveness of listed peers (one Redis only).
local prefix = nil
if one_redis then
  prefix = string.sub(KEYS[1], 1, #KEYS[1] - #peer)
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
-- Whether an entry last named at `seen` with HASH value `v` is live.
local function live(seen, v)
  local held = v and string.sub(v, -2) == '|h'
  return seen > now - (held and held_ttl or ttl)
end
-- The source network of a HASH value.
local function network(v)
  if v and string.sub(v, -2) == '|h' then return string.sub(v, 1, -3) end
  return v or ''
end
local plenty = {}
for i = k + 1, #KEYS, stride do
  local z, h = KEYS[i], KEYS[i + 1]
  local a = stride == 3 and KEYS[i + 2] or nil
  local named = ARGV[first_track + (i - k - 1) / stride]
  local kind, track = string.sub(named, 1, 1), string.sub(named, 2)
  if kind == 'd' then
    drop(z, h, a, {peer})
  elseif redis.call('ZSCORE', all_tracks, track) or redis.call('ZCARD', all_tracks) < max_tracks then
  local lifetime = kind == 'h' and held_ttl or ttl
  local listed = redis.call('ZSCORE', all_tracks, track)
  if not listed or tonumber(listed) < now + lifetime then
    redis.call('ZADD', all_tracks, now + lifetime, track)
  end
  live_for(all_tracks, lifetime)
  -- Forget entries that expired: every one past the held ttl, then played ones past the ttl.
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now - held_ttl)
  if #dead > 0 then
    drop(z, h, a, dead)
  end
  -- Stalest first, with their networks.
  local flat = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  local members, seen = {}, {}
  for j = 1, #flat, 2 do
    members[#members + 1] = flat[j]
    seen[#seen + 1] = tonumber(flat[j + 1])
  end
  local values = {}
  if #members > 0 then values = redis.call('HMGET', h, unpack(members)) end
  local alive, nets, gone = {}, {}, {}
  local mine = nil
  for j = 1, #members do
    if live(seen[j], values[j]) then
      alive[#alive + 1] = members[j]
      nets[#nets + 1] = network(values[j])
      if members[j] == peer then mine = values[j] end
    else
      gone[#gone + 1] = members[j]
    end
  end
  if #gone > 0 then drop(z, h, a, gone) end
  local record = true
  if not mine then
    if prefix and #alive >= per_track then
      -- A full list: entries of peers gone silent make room first.
      local kept, kept_nets, silent = {}, {}, {}
      for j = 1, #alive do
        if redis.call('EXISTS', prefix .. alive[j]) == 0 then
          silent[#silent + 1] = alive[j]
        else
          kept[#kept + 1] = alive[j]
          kept_nets[#kept_nets + 1] = nets[j]
        end
      end
      if #silent > 0 then
        drop(z, h, a, silent)
        alive, nets = kept, kept_nets
      end
    end
    local victim = nil
    if #alive > 0 then
      local counts, own = {}, 0
      for j = 1, #alive do
        counts[nets[j]] = (counts[nets[j]] or 0) + 1
      end
      own = counts[net] or 0
      if kind == 'h' and (own >= per_network or #alive >= per_track) then
        -- A held track takes a free place only: it displaces no one.
        record = false
        plenty[#plenty + 1] = track
      elseif own >= per_network then
        -- Its network has its share: the newcomer replaces that network's stalest.
        for j = 1, #alive do
          if nets[j] == net then victim = alive[j]; break end
        end
      elseif #alive >= per_track then
        -- Full: the stalest entry of the networks holding the most, its own first when it is
        -- one of them; a network is never displaced by one that would then hold more.
        local most = 0
        for _, c in pairs(counts) do
          if c > most then most = c end
        end
        for j = 1, #alive do
          local n = nets[j]
          if (own == most and n == net) or (own ~= most and counts[n] == most) then
            victim = alive[j]; break
          end
        end
      end
    end
    if victim then
      drop(z, h, a, {victim})
    end
  end
  if record then
    -- A holding played again stays a holding.
    local held = kind == 'h' or (mine and string.sub(mine, -2) == '|h')
    if held then lifetime = held_ttl end
    redis.call('ZADD', z, now, peer)
    redis.call('HSET', h, peer, held and (net .. '|h') or net)
    live_for(z, lifetime)
    live_for(h, lifetime)
    if a then
      redis.call('HSET', a, peer, addrs)
      live_for(a, lifetime)
    end
  end
  elseif kind == 'h' then
    plenty[#plenty + 1] = track
  end
end
local out = {1}
for j = 1, #plenty do out[#out + 1] = plenty[j] end
return out
