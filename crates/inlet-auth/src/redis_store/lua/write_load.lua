-- Writes a batch of records into a load's generation.
-- KEYS[1] loading hash
-- ARGV[1] generation, ARGV[2] token, ARGV[3] record key prefix
-- ("P" .. "g:" .. generation .. ":"), then quintuples:
-- digest, record JSON, revision, updated_at_ms, account id.
-- Returns -1 when the lease is gone (Redis flushed, or a newer load
-- committed), else how many records were kept because a newer one was
-- already there (written by the follower or an admin during the load).
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
local kept = 0
for i = 4, #ARGV, 5 do
  local key = ARGV[3] .. ARGV[i]
  if not redis.call('SET', key, ARGV[i + 1], 'NX') then
    if newer(ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], redis.call('GET', key)) then
      redis.call('SET', key, ARGV[i + 1])
    else
      kept = kept + 1
    end
  end
end
return kept
