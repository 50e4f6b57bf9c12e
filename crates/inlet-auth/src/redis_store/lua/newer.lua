-- Shared by the write scripts (prepended to each). Whether a record with
-- revision `rev` and change time `at` may replace the stored JSON `old`:
-- a lower revision never overwrites a higher one; at equal revisions the
-- later change wins (writers that do not bump `revision` still converge).
-- Anything unreadable in place is replaced.
local function newer(rev, at, old)
  if not old then return true end
  local ok, o = pcall(cjson.decode, old)
  if not ok or type(o) ~= 'table' then return true end
  local orev = tonumber(o.revision) or -1
  rev = tonumber(rev)
  if rev ~= orev then return rev > orev end
  return tonumber(at) >= (tonumber(o.updated_at_ms) or 0)
end
