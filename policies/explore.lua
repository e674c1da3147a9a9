-- explore.lua - Thompson sampling for unproven and new items.
--
-- Each item's click-through rate gets a Beta posterior from two decayed
-- counters: Beta(PRIOR_A + clicks, PRIOR_B + impressions - clicks) (clicks
-- capped at impressions: engagement without an impression carries no
-- evidence about the rate). "impressions" is added to by the server for
-- every item shown, "clicks" by policies/counters.lua.
--
-- A list shorter than req.n is first filled from the catalogue (fill,
-- below): a new deployment or a new user still gets a full list.
--
-- rerank(req, items): with n = min(req.n, #items) shown slots, up to
-- min(MAX_SLOTS, floor(SHARE * n)) of the lowest slots are offered to
-- unproven items (fewer than PROVEN impressions). Candidates come from the
-- items ranked below n, and from the "content" neighbours of the top
-- ANCHORS items (how a brand-new item with an embedding gets its first
-- impressions). Every candidate draws a rate from its posterior; the best
-- draws challenge the lowest slots, and (COMPETE) take a slot only when
-- their draw beats the incumbent's own draw, so exploration fades where
-- the current items are proven good. An inserted item takes the score of
-- the slot it replaces and carries why = "explore"; the displaced item
-- moves just below the shown slots. The list keeps its length. Never
-- inserts seen items (unless req.allow_seen), req.exclude or inactive
-- items. Previews (rec.recommend with record = false, as recd eval asks)
-- are not shown to anybody, so they are left as ranked: an exploration
-- slot is only worth its cost where it can be clicked.
--
-- Beta draws: X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b), Gamma by
-- Marsaglia and Tsang (2000), normals by Box-Muller, all from math.random.
--
-- Cost: one db:drop_seen over the POOL tail candidates and up to ANCHORS
-- db:similar (O(items x dim)), both leaving the user's history out in C
-- (O(history), no Lua work per history entry); two db:counter_get per
-- candidate and per challenged slot.
-- Knobs: SHARE, MAX_SLOTS, PROVEN, PRIOR_A/PRIOR_B, POOL, ANCHORS, SCAN_LIMIT,
-- COMPETE, SPACE, HALF_LIFE (of the counters, when this creates them).
local SHARE = 0.2
local MAX_SLOTS = 2
local PROVEN = 100
local PRIOR_A, PRIOR_B = 1.0, 9.0
local POOL = 20
local ANCHORS = 1
local SCAN_LIMIT = 20000
local COMPETE = true
local SPACE = "content"
local HALF_LIFE = 7 * 86400
local FILL_POOL = 3           -- x the slots to fill: candidates drawn to fill a short list

local function try(f, ...)
    local ok, r = pcall(f, ...)
    if ok then return r end
    if type(r) == "table" and r.name == "not_found" then return nil end
    error(r, 0)
end

-- Standard normal, Box-Muller.
local function normal()
    local u1 = 1.0 - math.random() -- (0, 1]
    local u2 = math.random()
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
end

-- Gamma(a, 1), Marsaglia-Tsang; a < 1 by the boost Gamma(a+1) * U^(1/a).
local function gamma(a)
    if a < 1 then
        return gamma(a + 1.0) * (1.0 - math.random()) ^ (1.0 / a)
    end
    local d = a - 1.0 / 3.0
    local c = 1.0 / math.sqrt(9.0 * d)
    while true do
        local x, v
        repeat
            x = normal()
            v = 1.0 + c * x
        until v > 0
        v = v * v * v
        local u = 1.0 - math.random()
        if u < 1.0 - 0.0331 * x * x * x * x then return d * v end
        if math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)) then return d * v end
    end
end

local function beta(a, b)
    local x, y = gamma(a), gamma(b)
    if x + y <= 0 then return a / (a + b) end
    return x / (x + y)
end

local M = {}
M.beta = beta -- exposed for tests

function M.on_load()
    rec:counter("impressions", HALF_LIFE)
    rec:counter("clicks", HALF_LIFE)
end

-- A list shorter than req.n (a new user on a new catalogue: no strategy has
-- evidence yet) is filled from the catalogue: items that earned clicks
-- anywhere and a random sample of the catalogue (db:sample), ordered by a
-- draw from each one's posterior, so the unproven are tried and what earns
-- clicks is shown more. The filled items carry why = "explore".
local function fill(req, items, db)
    local want = math.tointeger(req.n) or #items
    if #items >= want then return items end
    local need = want - #items
    local has_imp, has_clk = db:counter("impressions") ~= nil, db:counter("clicks") ~= nil
    local excl, skip = {}, {}
    local function leave_out(id)
        if id ~= nil and not skip[id] then
            skip[id] = true
            excl[#excl + 1] = id
        end
    end
    for _, id in ipairs(req.exclude or {}) do leave_out(id) end
    for _, it in ipairs(items) do leave_out(it.id) end
    local opts = {exclude = excl, seen_by = not req.allow_seen and req.user or nil, ts = req.now}
    local cands, cseen = {}, {}
    local function consider(hits)
        for _, h in ipairs(hits) do
            if not cseen[h.id] then
                cseen[h.id] = true
                local m = has_imp and db:counter_get("impressions", h.id, req.now) or 0
                local c = has_clk and db:counter_get("clicks", h.id, req.now) or 0
                if c > m then c = m end
                cands[#cands + 1] = {id = h.id, theta = beta(PRIOR_A + c, PRIOR_B + (m - c)),
                                     ord = #cands + 1}
            end
        end
    end
    if has_clk then consider(db:counter_top("clicks", FILL_POOL * need, opts)) end
    consider(db:sample(FILL_POOL * need, opts))
    table.sort(cands, function(x, y)
        if x.theta ~= y.theta then return x.theta > y.theta end
        return x.ord < y.ord
    end)
    local out, last = {}, 0
    for i, it in ipairs(items) do
        out[i] = it
        last = it.score or last
    end
    for k = 1, math.min(need, #cands) do
        out[#out + 1] = {id = cands[k].id, score = last - k * 1e-6, why = "explore",
                         theta = cands[k].theta}
    end
    return out
end

function M.rerank(req, items)
    local db = req.rec or rec
    items = fill(req, items, db)
    -- a preview (record = false) is shown to nobody: exploring in it would
    -- learn nothing, so it gets the list as ranked
    if req.record == false then return items end
    local n = math.min(math.tointeger(req.n) or #items, #items)
    local slots = math.min(MAX_SLOTS, math.floor(SHARE * n))
    if slots < 1 then return items end
    local has_imp, has_clk = db:counter("impressions") ~= nil, db:counter("clicks") ~= nil
    local now = req.now

    local function posterior(id)
        local m = has_imp and db:counter_get("impressions", id, now) or 0
        local c = has_clk and db:counter_get("clicks", id, now) or 0
        if c > m then c = m end
        return PRIOR_A + c, PRIOR_B + (m - c), m
    end

    -- what must not be inserted: req.exclude and the shown items here, the
    -- user's history (seen_by) in the engine
    local skip, excl = {}, {}
    local function add(id)
        if id ~= nil and not skip[id] then
            skip[id] = true
            excl[#excl + 1] = id
        end
    end
    for _, id in ipairs(req.exclude or {}) do add(id) end
    for i = 1, n do add(items[i].id) end
    local seen_by = not req.allow_seen and req.user or nil

    -- candidates: the tail of the list, then content neighbours of the top
    local cands, cseen = {}, {}
    local function consider(id, from_tail)
        if id == nil or skip[id] or cseen[id] then return end
        cseen[id] = true
        local a, b, m = posterior(id)
        if m < PROVEN then
            cands[#cands + 1] = {id = id, a = a, b = b, tail = from_tail, ord = #cands + 1}
        end
    end
    local tail = {}
    for i = n + 1, math.min(#items, n + POOL) do tail[#tail + 1] = items[i].id end
    if seen_by ~= nil then tail = db:drop_seen(seen_by, tail) end
    for _, id in ipairs(tail) do consider(id, true) end
    -- Content neighbours cost a scan of the space: only on small catalogues
    -- (on large ones the candidates below n, which strategies drew from
    -- content similarity among others, are the pool).
    local sp = db:space(SPACE)
    if sp and sp.items <= SCAN_LIMIT then
        for i = 1, math.min(ANCHORS, n) do
            local anchor = items[i].id
            if try(db.vector, db, "item", anchor, SPACE) then
                for _, h in ipairs(db:similar(anchor, POOL, {space = SPACE, exclude = excl, seen_by = seen_by})) do
                    consider(h.id, false)
                end
            end
        end
    end
    if #cands == 0 then return items end

    for _, c in ipairs(cands) do c.theta = beta(c.a, c.b) end
    table.sort(cands, function(x, y)
        if x.theta ~= y.theta then return x.theta > y.theta end
        return x.ord < y.ord
    end)

    local top, displaced, taken = {}, {}, {}
    for i = 1, n do top[i] = items[i] end
    local slot = n
    for k = 1, math.min(slots, #cands) do
        local c = cands[k]
        local inc = top[slot]
        local win = true
        if COMPETE then
            local a, b = posterior(inc.id)
            win = c.theta > beta(a, b)
        end
        if win then
            top[slot] = {id = c.id, score = inc.score, why = "explore", theta = c.theta}
            displaced[#displaced + 1] = inc
            taken[c.id] = true
        end
        slot = slot - 1
    end
    if #displaced == 0 then return items end

    local out = top
    for i = #displaced, 1, -1 do out[#out + 1] = displaced[i] end
    for i = n + 1, #items do
        if not taken[items[i].id] then out[#out + 1] = items[i] end
    end
    for i = #out, #items + 1, -1 do out[i] = nil end
    return out
end

return M
