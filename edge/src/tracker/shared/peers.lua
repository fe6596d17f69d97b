-- The live peers of one track in the shared tracker, in one round trip (docs/protocol.md §3.3).
-- The edge picks its answer from them (the newest half and a random sample of the rest), as
-- the in-memory tracker does.
--
-- KEYS[1]  the track's ZSET (peer id -> when its entry expires, ms, Redis clock)
-- KEYS[2]  on a cluster: the track's HASH peer id -> addresses (JSON), in the same slot
-- ARGV: the prefix of peer keys (peer key = prefix .. peer id), on one Redis
-- Returns a flat list: peer id, when its entry expires (ms), addresses (JSON), … newest (latest
-- to expire) first. On one Redis a peer gone silent (its key expired) is left out.
--
-- On one Redis the addresses are read from each peer's own key, named from the data: a
-- peer's addresses are kept once. A cluster runs a script on the keys of one slot, and a
-- track's peers are in many, so there each track keeps its peers' addresses (record.lua 'a').
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
local live = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. now, 'WITHSCORES')
local out = {}
if #live == 0 then
  return out
end
local addrs = {}
if KEYS[2] then
  local ids = {}
  for i = 1, #live, 2 do ids[#ids + 1] = live[i] end
  addrs = redis.call('HMGET', KEYS[2], unpack(ids))
else
  for i = 1, #live, 2 do addrs[#addrs + 1] = redis.call('HGET', prefix .. live[i], 'a') end
end
for i = 1, #live, 2 do
  local a = addrs[(i + 1) / 2]
  if a then
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
    out[#out + 1] = a
  end
end
return out
