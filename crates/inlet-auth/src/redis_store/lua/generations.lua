-- Shared by put.lua and remove.lua (prepended): the current generation and
-- every generation being loaded. KEYS[1] marker hash, KEYS[2] loading hash.
local function generations()
  local gens = {}
  local current = redis.call('HGET', KEYS[1], 'generation')
  if current then gens[#gens + 1] = current end
  for _, g in ipairs(redis.call('HKEYS', KEYS[2])) do
    if g ~= current then gens[#gens + 1] = g end
  end
  return gens
end
