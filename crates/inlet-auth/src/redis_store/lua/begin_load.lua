-- Starts a full load: hands out a generation number and registers the
-- load's lease in the loading hash.
-- KEYS[1] generation counter, KEYS[2] loading hash (generation -> token)
-- ARGV[1] now (Unix microseconds), ARGV[2] the load's token
-- The counter starts at the current time when it does not exist (a new
-- or flushed Redis), so generation numbers never go back: a load that
-- began before a flush can never share a number with one begun after it
-- (loads begin at least a round trip, so many microseconds, apart).
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
end
local generation = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], string.format('%d', generation), ARGV[2])
return generation
