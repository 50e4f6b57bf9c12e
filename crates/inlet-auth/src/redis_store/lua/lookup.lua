-- Reads the marker and one key of the generation it names, atomically: a
-- load committing (and deleting the previous generation) or a flush can
-- never make a lookup see a marker whose keys are gone.
-- KEYS[1] marker hash
-- ARGV[1] generations prefix ("P" .. "g:"), ARGV[2] digest
-- Returns {false, false} when there is no marker, else
-- {generation, record or false}.
local g = redis.call('HGET', KEYS[1], 'generation')
if not g then return {false, false} end
return {g, redis.call('GET', ARGV[1] .. g .. ':' .. ARGV[2])}
