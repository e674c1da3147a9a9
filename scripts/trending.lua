-- trending.lua - items whose engagement is rising right now.
--
-- Two decayed counters see the same positive events (policies/counters.lua):
-- "trend_short" (half-life 1 hour) and "trend_long" (half-life 1 day). For
-- an item engaged at a steady rate, short = long * (hl_short / hl_long);
-- an item spiking now has short close to long. The score is the lift
--
--     lift = (short + PRIOR) / (long * hl_short / hl_long + PRIOR)
--
-- about 1 for steady items and up to hl_long / hl_short (24) for items
-- whose whole history is the last hour. PRIOR (pseudo-weight) smooths
-- small counts, and items with less than MIN_EVIDENCE weight in the short
-- window are left out, so a single click does not make a trend.
--
-- Cost: one db:counter_top("trend_short") of POOL candidates (the user's
-- history left out in C by seen_by), then one db:counter_get per
-- candidate; O(items in the family + POOL).
-- Knobs: PRIOR, MIN_EVIDENCE, POOL_MIN/POOL_MAX (candidates examined:
-- 3n clamped to that range).
local SHORT, LONG = "trend_short", "trend_long"
local PRIOR = 2.0
local MIN_EVIDENCE = 4.0
local POOL_MIN, POOL_MAX = 30, 300

local M = {}

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    local cs, cl = db:counter(SHORT), db:counter(LONG)
    if n <= 0 or not cs or not cl then return {} end
    local now = req.now or os.time()
    -- With no decay on either family the ratio is meaningless: treat both
    -- windows as equal.
    local ratio = 1.0
    if cs.half_life > 0 and cl.half_life > 0 then ratio = cs.half_life / cl.half_life end
    local pool = math.min(math.max(3 * n, POOL_MIN), POOL_MAX)
    local seen_by = not req.allow_seen and req.user or nil
    local cands = db:counter_top(SHORT, pool, {exclude = req.exclude, seen_by = seen_by, ts = now})
    local out = {}
    for i, h in ipairs(cands) do
        local short = h.score
        if short >= MIN_EVIDENCE then
            local long = db:counter_get(LONG, h.id, now)
            local lift = (short + PRIOR) / (long * ratio + PRIOR)
            out[#out + 1] = {id = h.id, score = lift, short = short, long = long, rank = i}
        end
    end
    table.sort(out, function(a, b)
        if a.score ~= b.score then return a.score > b.score end
        return a.rank < b.rank
    end)
    for i = #out, n + 1, -1 do out[i] = nil end
    for _, c in ipairs(out) do c.rank = nil end
    return out
end

return M
