-- similar.lua - "more like this": items close to one anchor item.
--
-- The anchor is req.context.item when given (an item page), else the
-- user's most recent positive interaction (looked for among their newest
-- HISTORY_CAP events). When the anchor has a vector in the "content" space
-- the answer is its nearest items there (cosine); otherwise, or to fill up
-- when the content answer is short, its strongest co-occurrence
-- neighbours (what the same users engaged with around it). Fill items are
-- scored just below the last primary item so scores stay in order. No
-- anchor (a brand-new user with no context): empty answer; the hybrid
-- strategy covers cold start. The anchor, items the user already
-- interacted with (unless req.allow_seen) and req.exclude never come back.
--
-- Cost: without a context item, one db:history of HISTORY_CAP events; at
-- most one db:similar (O(items x dim)) and one db:neighbors (O(degree)).
-- Seen items are left out by the engine (seen_by, O(history) in C), so the
-- Lua work does not grow with the user's history.
-- Knobs: SPACE, HISTORY_CAP.
local SPACE = "content"
local HISTORY_CAP = 50

-- Call f; a not_found error (unknown item, no vector) gives nil, any
-- other error is raised again.
-- An id the engine accepts (a non-empty string or an integer).
local function is_id(x)
    return (type(x) == "string" and #x > 0 and #x < 256) or math.type(x) == "integer"
end

local function try(f, ...)
    local ok, r = pcall(f, ...)
    if ok then return r end
    if type(r) == "table" and r.name == "not_found" then return nil end
    error(r, 0)
end

local M = {}

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    if n <= 0 then return {} end
    local anchor = type(req.context) == "table" and req.context.item or nil
    if not is_id(anchor) then
        anchor = nil
        if req.user ~= nil then
            for _, h in ipairs(db:history(req.user, HISTORY_CAP)) do
                if h.weight > 0 then anchor = h.item break end
            end
        end
    end
    if anchor == nil then return {} end

    local skip, excl = {}, {}
    local function add(id)
        if id ~= nil and not skip[id] then
            skip[id] = true
            excl[#excl + 1] = id
        end
    end
    add(anchor)
    for _, id in ipairs(req.exclude or {}) do add(id) end
    local seen_by = not req.allow_seen and req.user or nil

    local out = {}
    if db:space(SPACE) and try(db.vector, db, "item", anchor, SPACE) then
        out = db:similar(anchor, n, {space = SPACE, exclude = excl, seen_by = seen_by})
        for _, h in ipairs(out) do h.why = "content" skip[h.id] = true end
    end
    if #out < n then
        local nb = try(db.neighbors, db, anchor, n, {exclude = excl, seen_by = seen_by}) or {}
        local floor = #out > 0 and out[#out].score or nil
        for _, h in ipairs(nb) do
            if #out >= n then break end
            if not skip[h.id] then
                skip[h.id] = true
                if floor then
                    -- keep scores descending below the content hits
                    floor = floor - 1e-6
                    h.score = floor
                end
                h.why = "cooccurrence"
                out[#out + 1] = h
            end
        end
    end
    return out
end

return M
