-- Ends a load's lease if it is still the load's own (a newer load with
-- the same number after a flush keeps its lease).
-- KEYS[1] loading hash
-- ARGV[1] generation, ARGV[2] token
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
