-- online_mf.lua - learn the "mf" vector space from every positive event.
--
-- Each event with weight > 0 makes one BPR step of matrix factorisation
-- (db:mf_update): the user's vector moves towards the item's and away from
-- NEGATIVES items sampled uniformly from the space; the item moves towards
-- the user. The step size scales with the event weight, compressed
-- (1 + ln w for w > 1) so a purchase (8) does not step eight times as far
-- as a view (1). Negative feedback (weight <= 0) makes no step: BPR has no
-- "push away from this item" update in the engine (see the report); the
-- item is already excluded from the user's recommendations as seen.
-- The space is created on the first step with DIM dimensions; new users
-- and items start from small random vectors. State lives in the engine
-- only, so a reload loses nothing.
--
-- Cost: one db:mf_update per batch of events (on_events): in C, one step
-- per positive event, O(NEGATIVES x DIM), made at once only while
-- something reads the space; otherwise the steps are owed (O(1) per
-- batch) and the next read pays them, as they would have been made
-- (docs/operations.md). The shipped hybrid pipeline does not read "mf".
-- Knobs: DIM, LR, REG, NEGATIVES, MAX_WEIGHT (cap on the scaled weight).
local SPACE = "mf"
local DIM = 64
local LR, REG = 0.05, 0.01
local NEGATIVES = 4
local MAX_WEIGHT = 4.0

local M = {}

function M.on_events(batch)
    -- weight = "log": 1 + ln w above 1, in C (no Lua call per event)
    rec:mf_update(batch, {space = SPACE, dim = DIM, lr = LR, reg = REG, negatives = NEGATIVES,
                          weight = "log", max_weight = MAX_WEIGHT})
end

return M
