-- Removes digests from the current generation and from every generation
-- being loaded (keys, or their accounts, deleted from the source of truth,
-- or no longer usable).
-- KEYS[1] marker hash, KEYS[2] loading hash
-- ARGV[1] generations prefix ("P" .. "g:"), then the digests.
-- Returns how many keys were removed.
local gens = generations()
local removed = 0
for i = 2, #ARGV do
  for _, g in ipairs(gens) do
    removed = removed + redis.call('UNLINK', ARGV[1] .. g .. ':' .. ARGV[i])
  end
end
return removed
