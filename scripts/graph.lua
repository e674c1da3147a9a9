-- graph.lua - random walks over the user-item graph (Pixie-style).
--
-- From the user's RECENT most recent positive items, db:walk hops item ->
-- a user who liked it -> another item that user liked, restarting at a
-- seed with probability RESTART, and ranks items by visits: "people who
-- engaged with what you engaged with also engaged with ...", reaching
-- further than direct co-occurrence. Seen items are left out by the engine
-- (or, with req.allow_seen, the walk starts from the same items given as a
-- list, which keeps them). A user with no history gets an empty answer.
--
-- Cost: one db:history and one db:walk, O(STEPS) (independent of the
-- catalogue size).
-- Knobs: STEPS, RESTART, RECENT.
local STEPS = 5000
local RESTART = 0.3
local RECENT = 20

local M = {}

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    if n <= 0 or req.user == nil then return {} end
    local hist = db:history(req.user, 4 * RECENT)
    local any = false
    for _, h in ipairs(hist) do
        if h.weight > 0 then any = true break end
    end
    if not any then return {} end
    local opts = {k = n, steps = STEPS, restart = RESTART, recent = RECENT, exclude = req.exclude}
    if not req.allow_seen then
        return db:walk({user = req.user}, opts)
    end
    local seeds, seen = {}, {}
    for _, h in ipairs(hist) do
        if #seeds >= RECENT then break end
        if h.weight > 0 and not seen[h.item] then
            seen[h.item] = true
            seeds[#seeds + 1] = h.item
        end
    end
    return db:walk(seeds, opts)
end

return M
