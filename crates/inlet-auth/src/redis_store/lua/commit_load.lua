-- Flips the populated marker to a fully written generation: only while the
-- load's lease is still there (no flush since it began) and only forward
-- (a newer generation already in force wins). Ends the lease, and the
-- leases of older loads, which can no longer commit.
-- KEYS[1] marker hash, KEYS[2] loading hash
-- ARGV[1] generation, ARGV[2] token, ARGV[3] count, ARGV[4] completed_at_ms
-- Returns 0 when committed, -1 when the lease was lost, else the newer
-- generation in force.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return -1 end
local ours = tonumber(ARGV[1])
for _, g in ipairs(redis.call('HKEYS', KEYS[2])) do
  if tonumber(g) <= ours then redis.call('HDEL', KEYS[2], g) end
end
local current = tonumber(redis.call('HGET', KEYS[1], 'generation'))
if current and current >= ours then return current end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'count', ARGV[3],
  'completed_at_ms', ARGV[4])
return 0
