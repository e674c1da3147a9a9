-- seen.lua - never show what the user already interacted with.
--
-- rerank drops every item in the user's history (any event type, positive
-- or negative) unless req.allow_seen is true, and every item in
-- req.exclude. Strategies already leave these out; this is the safety net
-- for candidates that come from elsewhere (another rerank, a strategy that
-- allows seen items for some pages). The list keeps its order.
--
-- Cost: one db:drop_seen, O(history + #items) in C (the history is not
-- copied into Lua), then O(#exclude + #items) Lua work.
-- Knobs: none.
local M = {}

function M.rerank(req, items)
    local db = req.rec or rec
    if not req.allow_seen and req.user ~= nil then
        items = db:drop_seen(req.user, items)
    end
    local exclude = req.exclude
    if type(exclude) ~= "table" or exclude[1] == nil then return items end
    local drop = {}
    for _, id in ipairs(exclude) do drop[id] = true end
    local out = {}
    for _, it in ipairs(items) do
        if not drop[it.id] then out[#out + 1] = it end
    end
    return out
end

return M
