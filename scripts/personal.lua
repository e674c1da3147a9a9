-- personal.lua - the user's own taste, from two vector spaces.
--
-- 1. Online MF ("mf" space, trained by policies/online_mf.lua): items by
--    dot product with the user's learned vector (db:recommend_vec).
-- 2. Content taste ("content" space, imported embeddings), for users whose
--    recent positive items have content vectors: the mean of those items'
--    normalised vectors, weighted by event weight and decayed by DECAY per
--    step back in time (the newest counts most), searched by cosine. This
--    answers at once, even before MF has learned anything.
-- The two lists are blended by weighted reciprocal rank fusion
-- (score = sum w / (RRF_K + rank)), so their different scales need no
-- calibration. MF's weight grows with the user's positive events
-- (MF_CONFIDENT of them give full weight). A user with neither signal
-- gets an empty answer.
--
-- The MF weight and the content taste look at the user's newest
-- HISTORY_CAP events only: enough for RECENT positive ones (and for
-- MF_CONFIDENT) in any ordinary history; a user whose newest HISTORY_CAP
-- events hold no positive one counts as having none.
-- Items the user interacted with (unless req.allow_seen) and req.exclude
-- are left out by the engine (exclude_seen, seen_by), not by Lua.
--
-- Cost: one db:history of HISTORY_CAP events, up to RECENT db:vector
-- reads, one db:topk (O(items x dim), or through the approximate index
-- above 32768 items) and one db:recommend_vec (O(items x dim)); Lua
-- work does not grow with the user's history.
-- Knobs: W_MF, W_CONTENT, MF_CONFIDENT, RECENT, DECAY, RRF_K,
-- POOL_MIN/POOL_MAX (candidates per source: 3n clamped), HISTORY_CAP.
local MF, CONTENT = "mf", "content"
local W_MF, W_CONTENT = 1.0, 1.0
local MF_CONFIDENT = 5
local RECENT, DECAY = 20, 0.85
local RRF_K = 10
local POOL_MIN, POOL_MAX = 30, 300
local HISTORY_CAP = 100

local function try(f, ...)
    local ok, r = pcall(f, ...)
    if ok then return r end
    if type(r) == "table" and r.name == "not_found" then return nil end
    error(r, 0)
end

-- Weighted, decayed mean of the normalised content vectors of the newest
-- RECENT positive interactions; nil when none has a vector.
local function content_profile(db, hist)
    local q, used, decay, count = nil, false, 1.0, 0
    local cache = {}
    for _, h in ipairs(hist) do
        if count >= RECENT then break end
        if h.weight > 0 then
            count = count + 1
            local v = cache[h.item]
            if v == nil then
                v = try(db.vector, db, "item", h.item, CONTENT) or false
                cache[h.item] = v
            end
            if v then
                local norm = 0.0
                for i = 1, #v do norm = norm + v[i] * v[i] end
                if norm > 0 then
                    local s = h.weight * decay / math.sqrt(norm)
                    if not q then
                        q = {}
                        for i = 1, #v do q[i] = 0.0 end
                    end
                    for i = 1, #v do q[i] = q[i] + s * v[i] end
                    used = true
                end
            end
            decay = decay * DECAY
        end
    end
    return used and q or nil
end

local function fuse(acc, order, hits, w, why)
    for r, h in ipairs(hits) do
        local c = acc[h.id]
        if not c then
            c = {id = h.id, score = 0.0, best = 0.0, ord = #order + 1}
            acc[h.id] = c
            order[#order + 1] = c
        end
        local s = w / (RRF_K + r - 1)
        c.score = c.score + s
        if s > c.best then c.best, c.why = s, why end
    end
end

local M = {}

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    if n <= 0 or req.user == nil then return {} end
    local pool = math.min(math.max(3 * n, POOL_MIN), POOL_MAX)
    local hist = db:history(req.user, HISTORY_CAP)
    local seen_by = not req.allow_seen and req.user or nil
    local positives = 0
    for _, h in ipairs(hist) do
        if h.weight > 0 then positives = positives + 1 end
    end

    local acc, order = {}, {}
    if db:space(MF) then
        local hits = try(db.recommend_vec, db, req.user, pool,
                         {exclude = req.exclude, exclude_seen = not req.allow_seen})
        if hits then
            fuse(acc, order, hits, W_MF * math.min(1.0, (positives + 1) / MF_CONFIDENT), "mf")
        end
    end
    if db:space(CONTENT) and positives > 0 then
        local q = content_profile(db, hist)
        if q then fuse(acc, order, db:topk(CONTENT, q, pool, {exclude = req.exclude, seen_by = seen_by}), W_CONTENT, "content") end
    end

    table.sort(order, function(a, b)
        if a.score ~= b.score then return a.score > b.score end
        return a.ord < b.ord
    end)
    local out = {}
    for i = 1, math.min(n, #order) do
        local c = order[i]
        out[i] = {id = c.id, score = c.score, why = c.why}
    end
    return out
end

return M
