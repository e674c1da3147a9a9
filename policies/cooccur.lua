-- cooccur.lua - the item co-occurrence graph: built into the engine.
--
-- Nothing to do per event: db:event already updates the graph for every
-- event, before any policy runs. When a user interacts positively
-- (weight > 0) with item i, each distinct item j among their last
-- `window` positive items (recd.open option, default 5) gets
-- w(i, j) += min(weight_i, weight_j), both ways; negative feedback adds no
-- edge, and db:user_delete takes a user's contributions back. The graph
-- is rebuilt from the event history when the engine opens, so it needs no
-- persisted state. db:neighbors, db:cooc and db:walk read it; similar.lua,
-- graph.lua and hybrid.lua use it.
--
-- The decayed counters that used to sit beside the graph update
-- ("popularity", "trend_short", "trend_long", "clicks") are maintained by
-- policies/counters.lua.
--
-- This file only checks, on load, that the engine handle is there; it is
-- kept so that the pipeline names the co-occurrence stage explicitly.
-- Cost: nothing per event. Knobs: none (the window is an engine option).
local M = {}

function M.on_load()
    assert(rec ~= nil, "cooccur: no engine handle 'rec'")
end

return M
