-- fatigue.lua - push down what a person keeps being shown and ignoring.
--
-- The server remembers, per person, what its lists showed them and they
-- did not engage with (db:shown: each showing weighs 1 at the top of a
-- list and less further down, 0.29 in the tenth slot, as people look at
-- lists; an engagement with the item clears it; user.delete forgets the
-- person). rerank multiplies each item's score by DISCOUNT ^ weight, a
-- continuous impression discount: the first showing already counts, each
-- further one counts again, and an item shown at the bottom of a list
-- costs less than one shown at the top. Items carry fatigue = their
-- weight when it is above 0. Negative feedback (skip, dislike) is an
-- event: the seen policy leaves such items out.
--
-- In the default pipeline the click model (policies/click.lua) already
-- learns what showing an item again does (its `shows` feature); this
-- policy serves pipelines without it, and is a floor under it.
--
-- Cost: one db:shown (C, at most 256 entries); O(#items) Lua.
-- Knobs: DISCOUNT.
local DISCOUNT = 0.5

local M = {}

function M.rerank(req, items)
    if req.user == nil or #items == 0 then return items end
    local db = req.rec or rec
    local shown = db:shown(req.user)
    if next(shown) == nil then return items end
    local out, moved = {}, false
    for i, it in ipairs(items) do
        local w = shown[it.id]
        if w and w > 0 then
            local s = it.score or 0
            local f = DISCOUNT ^ w
            it.score = s >= 0 and s * f or s / f
            it.fatigue = w
            moved = true
        end
        out[i] = it
    end
    if not moved then return items end
    -- stable: ties keep their order
    for i, it in ipairs(out) do it._at = i end
    table.sort(out, function(a, b)
        local sa, sb = a.score or 0, b.score or 0
        if sa ~= sb then return sa > sb end
        return a._at < b._at
    end)
    for _, it in ipairs(out) do it._at = nil end
    return out
end

return M
