-- counters.lua - the decayed per-item counters that strategies and
-- policies read. Every positive event (weight > 0) adds:
--
--   "popularity"   + weight   half-life 30 days  popular.lua, hybrid.lua
--   "trend_short"  + weight   half-life 1 hour   trending.lua, hybrid.lua
--   "trend_long"   + weight   half-life 1 day    trending.lua
--   "clicks"       + 1        half-life 7 days   explore.lua (successes)
--
-- "clicks" counts engagements (not weight) so that clicks / impressions is
-- a rate for explore's Beta posterior. "impressions" (same half-life as
-- "clicks", so the ratio is consistent) is created here and in explore.lua
-- but added to by the server for every item it shows. Negative feedback
-- changes no counter. Counters decay lazily, by timestamp: the event's own
-- ts is used, so replays and back-filled events land at the right time.
-- The co-occurrence graph needs no policy: the engine updates it itself
-- (see cooccur.lua).
--
-- Cost: four db:counter_add per batch of events (on_events), each a loop
-- in C over the batch's positive events; committed together.
-- Knobs: the half-lives below (an existing family keeps the half-life it
-- was created with).
local FAMILIES = {
    {"popularity", 30 * 86400},
    {"trend_short", 3600},
    {"trend_long", 86400},
    {"clicks", 7 * 86400},
    {"impressions", 7 * 86400},
}

local M = {}

function M.on_load()
    for _, f in ipairs(FAMILIES) do rec:counter(f[1], f[2]) end
end

function M.on_events(batch)
    rec:batch(function()
        rec:counter_add("popularity", batch)
        rec:counter_add("trend_short", batch)
        rec:counter_add("trend_long", batch)
        rec:counter_add("clicks", batch, {amount = 1})
    end)
end

return M
