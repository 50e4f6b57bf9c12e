-- Writes records (follower, key administration) into the current
-- generation and into every generation being loaded, so a load built
-- from a snapshot older than these changes cannot bring the older state
-- back; in each, only if the record is not older than what is there.
-- KEYS[1] marker hash, KEYS[2] loading hash
-- ARGV[1] generations prefix ("P" .. "g:"), then quintuples:
-- digest, record JSON, revision, updated_at_ms, account id.
-- Returns {generations, written}.
local gens = generations()
local written = 0
for i = 2, #ARGV, 5 do
  for _, g in ipairs(gens) do
    local key = ARGV[1] .. g .. ':' .. ARGV[i]
    if newer(ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], redis.call('GET', key)) then
      redis.call('SET', key, ARGV[i + 1])
      written = written + 1
    end
  end
end
return {#gens, written}
