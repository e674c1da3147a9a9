-- popular.lua - what is popular now: the time-decayed "popularity" counter.
--
-- The "popularity" counter family (half-life one day) is fed by the
-- counters policy (policies/counters.lua) with the weight of every positive
-- event, so this is "weighted engagement over roughly the last few days".
-- Items the user already interacted with (unless req.allow_seen), items in
-- req.exclude and inactive items never come back. A brand-new user gets
-- the same list as everybody: this is the cold-start fallback.
--
-- Cost: one db:history (to exclude what the user has seen) and one
-- db:counter_top over the family, O(items in the family).
-- Knobs: COUNTER (family name), HISTORY_CAP (how much history is excluded).
local COUNTER = "popularity"
local HISTORY_CAP = 100000

-- The user's seen items (unless allow_seen) plus req.exclude, deduplicated.
local function exclusions(db, req)
    local set, list = {}, {}
    local function add(id)
        if id ~= nil and not set[id] then
            set[id] = true
            list[#list + 1] = id
        end
    end
    for _, id in ipairs(req.exclude or {}) do add(id) end
    if not req.allow_seen and req.user ~= nil then
        for _, h in ipairs(db:history(req.user, HISTORY_CAP)) do add(h.item) end
    end
    return list
end

local M = {}

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    if n <= 0 or not db:counter(COUNTER) then return {} end
    return db:counter_top(COUNTER, n, {exclude = exclusions(db, req), ts = req.now})
end

return M
