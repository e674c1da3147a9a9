-- hybrid.lua - the default strategy: every signal at once, rank-fused.
--
-- Sources (each proposes up to POOL candidates; an item scores
-- sum w_s / (10 + rank_s), db:blend's rank fusion, so scales need no
-- calibration):
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
-- HISTORY_CAP when those hold too few positive ones) and one db:blend,
-- which runs every source, the fusion, the shown discount and the ranking
-- in C and builds one skip map for all of them: COOC_RECENT neighbour
-- lists, one taste (PROFILE_RECENT vectors) and one scan of the content
-- space, one scan of "mf" (when W_MF > 0), one or two EASE readings
-- (O(history x modelled items)), one walk (WALK_STEPS, about 60 ns a
-- step), one counter top. A vector scan is O(items x dim) below 32768
-- items and through the space's approximate index above (O(lists x dim +
-- probed rows x dim), docs/operations.md); the Lua work is a few small
-- tables and does not grow with the user's history or the pool.
-- Knobs: the W_* weights, COOC_RECENT, PROFILE_RECENT, DECAY, WALK_STEPS,
-- MF_CONFIDENT, POOL_MIN/POOL_MAX (2n clamped: the pipeline asks for
-- 3 x its n, so each source proposes 6 x the list served; 3n per source
-- measured the same in recd sim (2.55x random over six seeds) and on
-- MovieLens (HR@10 0.116, NDCG@10 0.372) for 8% more time), HISTORY_FIRST,
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
-- 500 steps: the same in recd sim as 1,000 (2.64x random over six seeds
-- against 2.55x) and on MovieLens (HR@10 0.116, NDCG@10 0.372), for half
-- the walk's time
local WALK_STEPS = 500
local MF_CONFIDENT = 5
local POOL_MIN, POOL_MAX = 30, 300
local HISTORY_FIRST, HISTORY_CAP = 20, 100
local W_EASE_SESSION, W_EASE_RETURN = 2.0, 16.0
local EASE_RECENT, EASE_DECAY = 10, 0.85
local SESSION_GAP, SESSION_STEEP, SESSION_MIN_GAP = 3600, 2, 1.0
local EASE_MIN_SHARE = 0.001
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
    local pool = math.min(math.max(2 * n, POOL_MIN), POOL_MAX)
    local hist = req.user ~= nil and read_history(db, req.user) or {}

    -- one skip map for every source, built in C: req.exclude and the
    -- context item, the user's history (seen_by, unless req.allow_seen)
    -- and what was shown to them without engagement SHOWN_SKIP times
    -- (shown_by); below that, a showing discounts the fused score
    local excl = {}
    for _, id in ipairs(req.exclude or {}) do excl[#excl + 1] = id end
    local ctx_item = type(req.context) == "table" and req.context.item or nil
    if not is_id(ctx_item) then ctx_item = nil end
    if ctx_item ~= nil then excl[#excl + 1] = ctx_item end
    local opts = {k = pool, exclude = excl, seen_by = not req.allow_seen and req.user or nil,
                  shown_by = req.user, shown_min = SHOWN_SKIP, shown_discount = SHOWN_DISCOUNT}

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

    local src = {}
    if ctx_item ~= nil then
        if db:space(CONTENT) then
            src[#src + 1] = {"similar", item = ctx_item, space = CONTENT, w = W_CONTEXT, why = "context"}
        end
        src[#src + 1] = {"neighbors", item = ctx_item, w = W_CONTEXT, why = "context"}
    end
    if positives == 0 then
        -- cold start: what everybody engages with, now
        src[#src + 1] = {"counter", name = "popularity", ts = now, w = W_COLD_POP, why = "popular"}
        src[#src + 1] = {"counter", name = "trend_short", ts = now, w = W_COLD_TREND, why = "trending"}
    else
        for i, item in ipairs(recent) do
            src[#src + 1] = {"neighbors", item = item, w = W_COOC / i, why = "cooc"}
        end
        if db:space(CONTENT) then
            -- the taste of the newest PROFILE_RECENT positive events of the
            -- history read (hist), each DECAY times the next
            src[#src + 1] = {"taste", user = req.user, space = CONTENT, recent = PROFILE_RECENT,
                             decay = DECAY, events = #hist, w = W_CONTENT, why = "content"}
        end
        if W_MF > 0 and db:space(MF) then
            src[#src + 1] = {"vec", user = req.user, space = MF,
                             w = W_MF * math.min(1.0, positives / MF_CONFIDENT), why = "mf"}
        end
        -- EASE by session and by lasting taste, blended by the age of the
        -- newest positive event (no model yet: the source adds nothing)
        local k = math.min(positives, EASE_RECENT)
        local gap = k > 1 and math.abs(last_ts - first_ts) / (k - 1) or nil
        local s = last_ts ~= nil and M.session_weight(now - last_ts, gap) or 0.0
        if s >= EASE_MIN_SHARE then
            src[#src + 1] = {"ease", user = req.user, recent = EASE_RECENT, decay = EASE_DECAY,
                             w = W_EASE_SESSION * s, why = "ease"}
        end
        if 1.0 - s >= EASE_MIN_SHARE then
            src[#src + 1] = {"ease", user = req.user, w = W_EASE_RETURN * (1.0 - s), why = "ease"}
        end
        src[#src + 1] = {"walk", seeds = req.allow_seen and recent or {user = req.user},
                         steps = WALK_STEPS, w = W_WALK, why = "walk"}
        src[#src + 1] = {"counter", name = "popularity", ts = now, w = W_POP, why = "popular"}
    end
    return db:blend(src, n, opts)
end

return M
