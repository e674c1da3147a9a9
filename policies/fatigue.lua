-- fatigue.lua - push down what a person keeps being shown and ignoring.
--
-- The server remembers, per person, what its lists showed them and they
-- did not engage with (db:shown: each showing weighs 1 at the top of a
-- list and less further down, 0.29 in the tenth slot, as people look at
-- lists; an engagement with the item clears it; user.delete forgets the
-- person). rerank (db:discount_shown) multiplies each item's score by DISCOUNT ^ weight, a
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
-- Cost: one db:discount_shown (C: the person's at most 256 shown items,
-- an id lookup per item, a sort); no Lua work per item.
-- Knobs: DISCOUNT.
local DISCOUNT = 0.5

local M = {}

function M.rerank(req, items)
    if req.user == nil or #items == 0 then return items end
    local db = req.rec or rec
    return db:discount_shown(req.user, items, DISCOUNT)
end

return M
