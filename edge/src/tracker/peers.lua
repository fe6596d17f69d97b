-- The live peers of one track in the shared tracker, in one round trip (docs/protocol.md §3.3).
-- The edge picks its answer from them (the newest half and a random sample of the rest), as
-- the in-memory tracker does.
--
-- KEYS[1]  the track's ZSET (peer id -> last announce, ms, Redis clock)
-- ARGV: ttl (ms), the prefix of peer keys (peer key = prefix .. peer id)
-- Returns a flat list: peer id, last announce (ms), addresses (JSON), … newest first. A peer
-- whose own key has expired is left out.
--
-- The peer keys are named from the data, not in KEYS: the shared tracker needs a standalone
-- Redis (or a primary with replicas), not a Redis Cluster.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, prefix = tonumber(ARGV[1]), ARGV[2]
local live = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. (now - ttl), 'WITHSCORES')
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
