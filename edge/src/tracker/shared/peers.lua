-- The live peers of one track in the shared tracker, in one round trip (docs/protocol.md §3.3).
-- The edge picks its answer from them (the newest half and a random sample of the rest), as
-- the in-memory tracker does.
--
-- KEYS[1]  the track's ZSET (peer id -> last announce, ms, Redis clock)
-- ARGV: ttl (ms), the prefix of peer keys (peer key = prefix .. peer id), or '' on a cluster
-- Returns a flat list, newest first: with a prefix, peer id, last announce (ms), addresses
-- (JSON), … leaving out a peer whose own key has expired; without one, peer id, last
-- announce, …, and the edge reads the addresses from each peer's bucket itself.
--
-- With a prefix the peer keys are named from the data, not in KEYS: that works on one Redis
-- only. A cluster runs a script on keys of one slot, and a track's peers are in many.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, prefix = tonumber(ARGV[1]), ARGV[2]
local live = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. (now - ttl), 'WITHSCORES')
if prefix == '' then
  return live
end
local out = {}
for i = 1, #live, 2 do
  local addrs = redis.call('HGET', prefix .. live[i], 'a')
  if addrs then
    out[#out + 1] = live[i]
    out[#out + 1] = live[i + 1]
    out[#out + 1] = addrs
  end
end
return out
