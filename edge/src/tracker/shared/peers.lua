-- The live peers of one track in the shared tracker, in one round trip (docs/protocol.md §3.3).
-- The edge picks its answer from them (the newest half and a random sample of the rest), as
-- the in-memory tracker does.
--
-- KEYS[1]  the track's ZSET (peer id -> when an announce last named it, ms, Redis clock)
-- KEYS[2]  the track's HASH peer id -> source network, '|h' after it for a held entry
-- KEYS[3]  on a cluster: the track's HASH peer id -> addresses (JSON), in the same slot
-- ARGV: ttl (ms), held ttl (ms), the prefix of peer keys (peer key = prefix .. peer id), on
-- one Redis
-- Returns a flat list: peer id, when last named (ms), addresses (JSON), … newest first. An
-- entry lives the ttl after it was named, or the held ttl when named as held; on one Redis a
-- peer gone silent (its key expired) is left out.
--
-- On one Redis the addresses are read from each peer's own key, named from the data: a
-- peer's addresses are kept once. A cluster runs a script on the keys of one slot, and a
-- track's peers are in many, so there each track keeps its peers' addresses (record.lua 'a').
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, held_ttl, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local flat = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. (now - held_ttl), 'WITHSCORES')
local out = {}
if #flat == 0 then
  return out
end
local ids = {}
for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
local kinds = redis.call('HMGET', KEYS[2], unpack(ids))
local live, seen = {}, {}
for j = 1, #ids do
  local v = kinds[j]
  local held = v and string.sub(v, -2) == '|h'
  local s = tonumber(flat[2 * j])
  if s > now - (held and held_ttl or ttl) then
    live[#live + 1] = ids[j]
    seen[#seen + 1] = flat[2 * j]
  end
end
if #live == 0 then
  return out
end
local addrs = {}
if KEYS[3] then
  addrs = redis.call('HMGET', KEYS[3], unpack(live))
else
  for j = 1, #live do addrs[j] = redis.call('HGET', prefix .. live[j], 'a') end
end
for j = 1, #live do
  local a = addrs[j]
  if a then
    out[#out + 1] = live[j]
    out[#out + 1] = seen[j]
    out[#out + 1] = a
  end
end
return out
