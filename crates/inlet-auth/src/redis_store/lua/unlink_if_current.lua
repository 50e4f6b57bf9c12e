-- Deletes keys of older generations, but only while the marker still
-- names `keep`: a load that committed and was then overtaken (or whose
-- Redis was flushed and reloaded) must not delete the generation now in
-- force.
-- KEYS[1] marker hash
-- ARGV[1] keep (the generation that must be current), then the keys.
-- Returns how many keys were removed, or -1 when the marker moved.
if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[1] then return -1 end
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('UNLINK', ARGV[i])
end
return removed
