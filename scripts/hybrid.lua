-- hybrid.lua - the default strategy: every signal at once, rank-fused.
--
-- Sources (each proposes up to POOL candidates; an item scores
-- sum w_s / (RRF_K + rank_s), so scales need no calibration):
--   cooc     items co-occurring with the user's last COOC_RECENT positive
--            items, the newest weighted most (W_COOC / position). On
--            MovieLens-like data this is the strongest simple online
--            signal, and it follows a change of taste at the next call.
--   context  with req.context.item (an item page): its content neighbours
--            and co-occurrence neighbours (W_CONTEXT each). Weighted to
--            lead the list: the page's item decides the topic, the
--            user's taste orders what agrees with it.
--   content  the user's content taste: decayed, weight-scaled mean of the
--            "content" vectors of their recent positive items (W_CONTENT).
--            Brand-new items with a content vector enter the ranking
--            through it alone, so they rank below items several sources
--            agree on; policies/explore.lua gives them shown slots.
--   mf       the online MF vector in "mf" (W_MF, scaled by how many
--            positive events the user has: MF needs a few to mean much).
--            Off by default (W_MF = 0, and then not scanned): on MovieLens
--            it moved neither protocol (prequential HR@10 0.1148 without,
--            0.1146 with; holdout NDCG@10 0.3717 and 0.3718) and it costs
--            a scan of every item per request.
--   ease     the EASE item-item model (policies/ease.lua trains it; nil
--            until then), read two ways and blended by how long ago the
--            user's newest positive event was (age). The session reading
--            follows the next item: their newest EASE_RECENT items, each
--            older one weighing EASE_DECAY times the next. The lasting
--            reading is EASE over their whole history, weighted to lead.
--            Their weights are W_EASE_SESSION * s and W_EASE_RETURN * (1 - s)
--            with s = 1 / (1 + (age / SESSION_GAP)^SESSION_STEEP): 1 at
--            age 0, 1/2 at SESSION_GAP, 0.01 at 10 x SESSION_GAP, so a
--            user clicking now is served by the session and one coming back
--            after a day by the lasting taste, with no jump in between (a
--            reading weighing less than EASE_MIN_SHARE of its full weight
--            is skipped; the lasting one outweighs the session one from
--            about 21 minutes). The age is on the events' own clock: a log
--            without timestamps replayed by `recd eval` ticks one second
--            per line. When the user's newest EASE_RECENT positive events
--            came faster than one every SESSION_MIN_GAP seconds on average,
--            s shrinks in proportion, to 0 when they carry one time: a bulk
--            load, or events that all took one clock, tell nothing of a
--            session. On MovieLens (BENCHMARKS.md) the first lifts
--            next-item hit rate and the second the ranking of a returning
--            user's held-out items; either one used for both costs the other.
--   walk     random walks from the user's recent items (W_WALK).
--   popular  the decayed "popularity" counter (W_POP).
-- Cold start: a user with no positive history gets popularity (W_COLD_POP)
-- and what is hot in the last hour ("trend_short", W_COLD_TREND), plus the
-- context item's neighbours when given. Seen items (unless
-- req.allow_seen), req.exclude and inactive items never come back: the
-- engine leaves the user's whole history out of every source (seen_by),
-- so no list of seen ids is built in Lua. Each result carries why = the
-- source that contributed most.
-- The user's signals come from their newest HISTORY_CAP events only: the
-- last COOC_RECENT distinct positive items, the last PROFILE_RECENT
-- positive events and a positive count that matters up to MF_CONFIDENT,
-- which an ordinary history holds well within the cap; a user whose
-- newest HISTORY_CAP events hold no positive one is served as cold. The
-- newest HISTORY_FIRST events are read first, and the rest of the cap only
-- when those fall short.
--
-- Cost: one db:history of HISTORY_FIRST events (a second one of
-- HISTORY_CAP when those hold too few positive ones), COOC_RECENT
-- db:neighbors, up to PROFILE_RECENT db:vector reads + one db:topk, one
-- db:recommend_vec (when W_MF > 0), one or two db:ease (O(history x modelled items)), one
-- db:walk (WALK_STEPS), one or two db:counter_top.
-- Vector scans are O(items x dim); the Lua work does not grow with the
-- user's history.
-- Knobs: the W_* weights, COOC_RECENT, PROFILE_RECENT, DECAY, WALK_STEPS,
-- MF_CONFIDENT, RRF_K, POOL_MIN/POOL_MAX (3n clamped), HISTORY_FIRST,
-- HISTORY_CAP, EASE_RECENT, EASE_DECAY, SESSION_GAP, SESSION_STEEP,
-- SESSION_MIN_GAP, EASE_MIN_SHARE.
local CONTENT, MF = "content", "mf"
local W_COOC, W_CONTEXT, W_CONTENT, W_MF, W_WALK = 2.0, 4.0, 1.0, 0.0, 0.5
-- what everyone clicks: raise it and popular items of every kind reach
-- the candidates (policies/diversity.lua spreads the list over them)
local W_POP = 0.3
local W_COLD_POP, W_COLD_TREND = 1.0, 0.5
local COOC_RECENT = 5
local PROFILE_RECENT, DECAY = 10, 0.85
local WALK_STEPS = 1000
local MF_CONFIDENT = 5
local RRF_K = 10
local POOL_MIN, POOL_MAX = 30, 300
local HISTORY_FIRST, HISTORY_CAP = 20, 100
local W_EASE_SESSION, W_EASE_RETURN = 2.0, 16.0
local EASE_RECENT, EASE_DECAY = 10, 0.85
local SESSION_GAP, SESSION_STEEP, SESSION_MIN_GAP = 3600, 2, 1.0
local EASE_MIN_SHARE = 0.001
local SELECT_MAX = 64   -- above this n, one sort of every candidate
-- What the server's lists showed the person and they did not engage with
-- (db:shown: each showing weighs 1 at the top of a list, 0.29 in the tenth
-- slot): at a weight of SHOWN_SKIP, an item leaves the candidates, so the
-- sources reach further; below it, its fused score is multiplied by
-- SHOWN_DISCOUNT per unit of weight. An engagement clears the item. In
-- recd sim (people tire of what they were shown) this lifts the default
-- pipeline from 0.63x to 1.5x a random list's CTR (BENCHMARKS.md).
local SHOWN_SKIP = 0.6
local SHOWN_DISCOUNT = 0.5

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

-- The user's newest events: HISTORY_FIRST of them when they hold every
-- positive one the sources use, else HISTORY_CAP (the same answer as
-- reading HISTORY_CAP at once).
local function read_history(db, user)
    local hist = db:history(user, HISTORY_FIRST)
    if #hist < HISTORY_FIRST then return hist end
    local positives, distinct, seen = 0, 0, {}
    for _, h in ipairs(hist) do
        if h.weight > 0 then
            positives = positives + 1
            if not seen[h.item] then
                seen[h.item] = true
                distinct = distinct + 1
            end
        end
    end
    if positives >= PROFILE_RECENT and positives >= MF_CONFIDENT and distinct >= COOC_RECENT then
        return hist
    end
    return db:history(user, HISTORY_CAP)
end

local function content_profile(db, hist)
    local q, used, decay, count, cache = nil, false, 1.0, 0, {}
    for _, h in ipairs(hist) do
        if count >= PROFILE_RECENT then break end
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
    if not hits or w <= 0 then return end
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

-- How much the user is still in a session, from the age in seconds of
-- their newest positive event: 1 at age 0 (or an event stamped after
-- now), falling continuously, 1/2 at SESSION_GAP; 0 without one. gap (if
-- given) is the mean time between their newest positive events: below
-- SESSION_MIN_GAP it scales the weight down in proportion (0 when they
-- all carry one time), since events faster than a person engages come
-- from a bulk load or from a clock that does not tick, not a session.
function M.session_weight(age, gap)
    if type(age) ~= "number" or age ~= age then return 0.0 end
    local s = age <= 0 and 1.0 or 1.0 / (1.0 + (age / SESSION_GAP) ^ SESSION_STEEP)
    if type(gap) == "number" and gap < SESSION_MIN_GAP then
        s = gap > 0 and s * gap / SESSION_MIN_GAP or 0.0
    end
    return s
end

function M.recommend(req)
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    if n <= 0 then return {} end
    local now = req.now or os.time()
    local pool = math.min(math.max(3 * n, POOL_MIN), POOL_MAX)
    local hist = req.user ~= nil and read_history(db, req.user) or {}

    local skip, excl = {}, {}
    local function add(id)
        if id ~= nil and not skip[id] then
            skip[id] = true
            excl[#excl + 1] = id
        end
    end
    for _, id in ipairs(req.exclude or {}) do add(id) end
    -- the user's history is left out by the engine (seen_by), not by a
    -- list of ids rebuilt for every call
    local seen_by = not req.allow_seen and req.user or nil
    local shown_by = req.user
    local ctx_item = type(req.context) == "table" and req.context.item or nil
    if not is_id(ctx_item) then ctx_item = nil end
    local ctx_excl = excl
    if ctx_item ~= nil and not skip[ctx_item] then
        ctx_excl = {ctx_item}
        for i = 1, #excl do ctx_excl[i + 1] = excl[i] end
    end

    -- the newest distinct positive items
    local recent, rseen, positives, last_ts, first_ts = {}, {}, 0, nil, nil
    for _, h in ipairs(hist) do
        if h.weight > 0 then
            positives = positives + 1
            last_ts = last_ts or h.ts
            if positives <= EASE_RECENT then first_ts = h.ts end
            if #recent < COOC_RECENT and not rseen[h.item] then
                rseen[h.item] = true
                recent[#recent + 1] = h.item
            end
        end
    end

    local acc, order = {}, {}
    if ctx_item ~= nil then
        if db:space(CONTENT) and try(db.vector, db, "item", ctx_item, CONTENT) then
            fuse(acc, order, db:similar(ctx_item, pool, {space = CONTENT, exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP}),
                 W_CONTEXT, "context")
        end
        fuse(acc, order, try(db.neighbors, db, ctx_item, pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP}),
             W_CONTEXT, "context")
    end

    if positives == 0 then
        -- cold start: what everybody engages with, now
        if db:counter("popularity") then
            fuse(acc, order, db:counter_top("popularity", pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP, ts = now}),
                 W_COLD_POP, "popular")
        end
        if db:counter("trend_short") then
            fuse(acc, order, db:counter_top("trend_short", pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP, ts = now}),
                 W_COLD_TREND, "trending")
        end
    else
        for i, item in ipairs(recent) do
            fuse(acc, order, try(db.neighbors, db, item, pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP}),
                 W_COOC / i, "cooc")
        end
        if db:space(CONTENT) then
            local q = content_profile(db, hist)
            if q then
                fuse(acc, order, db:topk(CONTENT, q, pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP}), W_CONTENT, "content")
            end
        end
        if W_MF > 0 and db:space(MF) then
            fuse(acc, order, try(db.recommend_vec, db, req.user, pool,
                                 {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP, exclude_seen = not req.allow_seen}),
                 W_MF * math.min(1.0, positives / MF_CONFIDENT), "mf")
        end
        -- EASE by session and by lasting taste, blended by the age of the
        -- newest positive event (no model yet: db:ease answers nil)
        local k = math.min(positives, EASE_RECENT)
        local gap = k > 1 and math.abs(last_ts - first_ts) / (k - 1) or nil
        local s = last_ts ~= nil and M.session_weight(now - last_ts, gap) or 0.0
        if s >= EASE_MIN_SHARE then
            fuse(acc, order, db:ease(req.user, pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP,
                                                      recent = EASE_RECENT, decay = EASE_DECAY}),
                 W_EASE_SESSION * s, "ease")
        end
        if 1.0 - s >= EASE_MIN_SHARE then
            fuse(acc, order, db:ease(req.user, pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP}),
                 W_EASE_RETURN * (1.0 - s), "ease")
        end
        if W_WALK > 0 then
            local wopts = {k = pool, steps = WALK_STEPS, exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP}
            local seeds = req.allow_seen and recent or {user = req.user}
            fuse(acc, order, try(db.walk, db, seeds, wopts), W_WALK, "walk")
        end
        if db:counter("popularity") then
            fuse(acc, order, db:counter_top("popularity", pool, {exclude = ctx_excl, seen_by = seen_by, shown_by = shown_by, shown_min = SHOWN_SKIP, ts = now}),
                 W_POP, "popular")
        end
    end

    -- shown without engagement: pushed down per showing
    if shown_by ~= nil then
        local shown = db:shown(shown_by)
        if next(shown) ~= nil then
            for _, c in ipairs(order) do
                local k = shown[c.id]
                if k then c.score = c.score * SHOWN_DISCOUNT ^ k end
            end
        end
    end

    -- the n best by score (earlier candidates first on ties): for the
    -- usual small n, kept in a sorted list of n rather than sorting every
    -- candidate (O(m n) beats a comparator sort of all m in Lua)
    if n > SELECT_MAX then
        table.sort(order, function(a, b)
            if a.score ~= b.score then return a.score > b.score end
            return a.ord < b.ord
        end)
    end
    local best, nb = n > SELECT_MAX and order or {}, n > SELECT_MAX and math.min(n, #order) or 0
    for _, c in ipairs(n > SELECT_MAX and {} or order) do
        local last = best[nb]
        if nb < n or c.score > last.score then
            local i = nb < n and nb or nb - 1
            while i >= 1 and c.score > best[i].score do
                best[i + 1] = best[i]
                i = i - 1
            end
            best[i + 1] = c
            if nb < n then nb = nb + 1 end
        end
    end
    local out = {}
    for i = 1, nb do
        local c = best[i]
        out[i] = {id = c.id, score = c.score, why = c.why}
    end
    return out
end

return M
