-- Shared by the write scripts (prepended to each). Whether a record with
-- revision `rev`, change time `at` and account `account` may replace the
-- stored JSON `old`: a lower revision never overwrites a higher one; at
-- equal revisions the later change wins (writers that do not bump
-- `revision` still converge). A record of another account is not an older
-- version of this one (a key moved to another account: its revision sum
-- starts over), and anything unreadable in place is replaced.
local function newer(rev, at, account, old)
  if not old then return true end
  local ok, o = pcall(cjson.decode, old)
  if not ok or type(o) ~= 'table' then return true end
  if o.account_id ~= account then return true end
  local orev = tonumber(o.revision) or -1
  rev = tonumber(rev)
  if rev ~= orev then return rev > orev end
  return tonumber(at) >= (tonumber(o.updated_at_ms) or 0)
end
