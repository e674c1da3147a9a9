-- diversity.lua - spread the list over the "content" space (MMR).
--
-- Maximal marginal relevance (Carbonell & Goldstein 1998): the list is
-- rebuilt greedily, each step taking the candidate that maximises
--     LAMBDA * relevance - (1 - LAMBDA) * max cosine to the items taken,
-- so a near-duplicate of an item already shown must be clearly more
-- relevant to come next. Relevance is the candidate's score scaled to
-- [0, 1] (score / max when scores are non-negative, else min-max);
-- items without a content vector count as dissimilar to everything.
-- Only the first WINDOW candidates are reordered; the rest follow
-- unchanged. Does nothing when the "content" space does not exist.
-- Scores are left as they were (the order is the output); each reordered
-- item gets mmr = its marginal value when taken.
--
-- Cost: one db:vector per candidate in the window, O(WINDOW^2 x dim) Lua
-- arithmetic (50 x 50 x 64 is about 160k multiply-adds).
-- Knobs: LAMBDA, WINDOW, SPACE.
local LAMBDA = 0.7
local WINDOW = 50
local SPACE = "content"

local function try(f, ...)
    local ok, r = pcall(f, ...)
    if ok then return r end
    if type(r) == "table" and r.name == "not_found" then return nil end
    error(r, 0)
end

local M = {}

function M.rerank(req, items)
    local db = req.rec or rec
    local m = math.min(#items, WINDOW)
    if m < 3 or not db:space(SPACE) then return items end

    -- relevance in [0, 1]
    local lo, hi = math.huge, -math.huge
    for i = 1, m do
        local s = tonumber(items[i].score) or 0
        if s < lo then lo = s end
        if s > hi then hi = s end
    end
    local rel = {}
    for i = 1, m do
        local s = tonumber(items[i].score) or 0
        if lo >= 0 then
            rel[i] = hi > 0 and s / hi or 1.0
        else
            rel[i] = hi > lo and (s - lo) / (hi - lo) or 1.0
        end
    end

    -- unit vectors (false when none)
    local vec = {}
    for i = 1, m do
        local v = try(db.vector, db, "item", items[i].id, SPACE)
        if v then
            local norm = 0.0
            for d = 1, #v do norm = norm + v[d] * v[d] end
            if norm > 0 then
                norm = 1.0 / math.sqrt(norm)
                for d = 1, #v do v[d] = v[d] * norm end
            else
                v = false
            end
        end
        vec[i] = v or false
    end

    local maxsim, taken, out = {}, {}, {}
    for i = 1, m do maxsim[i] = 0.0 end
    for _ = 1, m do
        local best, bestv
        for i = 1, m do
            if not taken[i] then
                local val = LAMBDA * rel[i] - (1 - LAMBDA) * maxsim[i]
                if not best or val > bestv then best, bestv = i, val end
            end
        end
        taken[best] = true
        items[best].mmr = bestv
        out[#out + 1] = items[best]
        local vb = vec[best]
        if vb then
            for i = 1, m do
                local vi = vec[i]
                if not taken[i] and vi then
                    local s = 0.0
                    for d = 1, #vb do s = s + vb[d] * vi[d] end
                    if s > maxsim[i] then maxsim[i] = s end
                end
            end
        end
    end
    for i = m + 1, #items do out[#out + 1] = items[i] end
    return out
end

return M
