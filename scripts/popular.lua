-- popular.lua - what is popular now: the time-decayed "popularity" counter.
--
-- The "popularity" counter family (half-life one day) is fed by the
-- counters policy (policies/counters.lua) with the weight of every positive
-- event, so this is "weighted engagement over roughly the last few days".
-- Items the user already interacted with (unless req.allow_seen), items in
-- req.exclude and inactive items never come back. A brand-new user gets
-- the same list as everybody: this is the cold-start fallback.
--
-- Cost: one db:counter_top over the family, O(items in the family); the
-- user's history is left out in C (seen_by), O(history), with no Lua work
-- per history entry.
-- Knobs: COUNTER (family name).
local COUNTER = "popularity"

local M = {}

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    if n <= 0 or not db:counter(COUNTER) then return {} end
    local seen_by = not req.allow_seen and req.user or nil
    return db:counter_top(COUNTER, n, {exclude = req.exclude, seen_by = seen_by, ts = req.now})
end

return M
