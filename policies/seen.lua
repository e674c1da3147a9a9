-- seen.lua - never show what the user already interacted with.
--
-- rerank drops every item in the user's history (any event type, positive
-- or negative) unless req.allow_seen is true, and every item in
-- req.exclude. Strategies already leave these out; this is the safety net
-- for candidates that come from elsewhere (another rerank, a strategy that
-- allows seen items for some pages).
--
-- Cost: one db:history (HISTORY_CAP newest events), O(history + #items).
-- Knobs: HISTORY_CAP.
local HISTORY_CAP = 100000

local M = {}

function M.rerank(req, items)
    local db = req.rec or rec
    local drop, any = {}, false
    for _, id in ipairs(req.exclude or {}) do drop[id] = true any = true end
    if not req.allow_seen and req.user ~= nil then
        for _, h in ipairs(db:history(req.user, HISTORY_CAP)) do drop[h.item] = true any = true end
    end
    if not any then return items end
    local out = {}
    for _, it in ipairs(items) do
        if not drop[it.id] then out[#out + 1] = it end
    end
    return out
end

return M
