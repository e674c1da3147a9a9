-- click.lua - rank the list by what people are expected to do with it.
--
-- `model` declares the engine's click model (docs/click-model.md): the
-- server logs these features for every item it shows, with its position,
-- and learns P(click) from what people then click (a shown item not
-- clicked within `window` seconds is a negative) and P(conversion | click)
-- from the conversions of clicked items. Position is a feature in
-- training and fixed at the top in prediction, so the model's ranking is
-- free of position bias.
--
-- rerank(req, items): the candidates (the strategies' pool, widened by
-- SAMPLE items drawn from the catalogue the person has not seen, so that
-- what no strategy proposes can still be found, and by TASTE_K items
-- nearest their taste in TASTE_SPACE: off by default, as in recd sim it
-- added nothing to the draws (2.59-2.74x random with 50, 2.66-2.67x
-- without) and it costs a scan of the space) are ranked by
-- expected value
--     draw(P(click)) x (1 + CONVERSION_WEIGHT x P(conversion | click) x v / mean)
-- where v is what a conversion of the item is worth (the mean `value` of
-- its conversion events, shrunk towards the mean of all conversions; on_events
-- keeps the sums) and mean is the mean of all: an item whose conversions
-- carry twice the usual value counts its conversions twice
-- where draw is Thompson sampling on the click logit: the logit plus
-- EXPLORE standard deviations of its uncertainty times a normal draw, so
-- items the model knows little about get shown in proportion to how
-- likely they are to be good. Each item carries p_click (and
-- p_conversion) as predicted. Until the model has learned from WARM
-- examples (or when no policy declares one), the strategies' order is
-- kept, and a list shorter than req.n is filled from the catalogue, spread
-- over its content (of three times the draws needed, the most unlike each
-- other in FILL_SPACE): a new deployment or a new person still gets a full
-- list, and its outcomes teach the model. Past WARM, Thompson sampling on
-- the model's uncertainty favours what it knows little of: new items, new
-- categories.
--
-- Cost: one db:click_rank over the pool (in C: SAMPLE draws, the
-- features, both models, the draws and the sort; two counter reads per
-- candidate once a conversion carried a value) and one kv_get; with
-- TASTE_K one db:profile and db:topk (a scan of the space). The Lua work
-- is a table of the strategies' candidates. Per batch of events: a pass
-- in C for conversions with a value; per such conversion two counter
-- adds, and one kv write per batch that has any. Before WARM: one
-- db:click_predict of nothing.
-- Knobs: EXPLORE, CONVERSION_WEIGHT, SAMPLE, KEEP, TASTE_K, TASTE_SPACE, WARM,
-- FILL_SPACE, VALUE_HALF_LIFE, VALUE_PRIOR,
-- and the model's features.
local EXPLORE = 0.5
local CONVERSION_WEIGHT = 1.0
local SAMPLE = 100
-- what a conversion is worth: each item's mean conversion value (the
-- `value` of its conversion events, decayed over VALUE_HALF_LIFE), shrunk
-- towards the mean of all conversions by VALUE_PRIOR conversions' worth
local VALUE_HALF_LIFE, VALUE_PRIOR = 30 * 86400, 5
local V_SUM, V_COUNT, V_MEAN = "click_conv_value", "click_conv_count", "click:conv_mean"
local TASTE_K, TASTE_SPACE = 0, "content"
local FILL_SPACE = "content"
local WARM = 200
-- the ranked list handed on (to fatigue) is KEEP x n long
local KEEP = 3

local M = {}

M.model = {
    kind = "fm", k = 8,
    window = 1800,
    clicks = {"click"},
    conversions = {"purchase"},
    features = {
        "item", "user", "position", "strategy", "score", "shows",
        "prop:category", {"prop:category", "position"},
        "taste:category", "ignored:category", "like:content",
    },
}

function M.rerank(req, items)
    if req.user == nil then return items end
    local db = req.rec or rec
    local n = math.tointeger(req.n) or 10
    -- no model declared, or too little learned yet: the strategies' order,
    -- a short list filled from the catalogue
    local ok, res, learned = pcall(db.click_predict, db, req, {})
    if not ok and not (type(res) == "table" and res.name == "not_found") then error(res, 0) end
    local warm = ok and learned >= WARM
    local pool = items
    local want = n - #items
    if (warm and TASTE_K > 0 and db:space(TASTE_SPACE)) or (not warm and want > 0) then
        pool = {}
        local have = {}
        for i, it in ipairs(items) do
            pool[i] = it
            have[it.id] = true
        end
        local extra
        if warm then
            local q = db:profile(req.user, TASTE_SPACE)
            extra = q and db:topk(TASTE_SPACE, q, TASTE_K, {seen_by = req.user, exclude = req.exclude}) or {}
        else
            -- spread over content: three times the draws needed, the most
            -- unlike each other kept (MMR without relevance; unchanged
            -- without a FILL_SPACE)
            extra = db:sample(3 * want, {seen_by = req.user, exclude = req.exclude})
            if #extra > want and db:space(FILL_SPACE) then
                extra = db:mmr(extra, {space = FILL_SPACE, lambda = 0, window = math.min(#extra, 256)})
            end
            for i = #extra, want + 1, -1 do extra[i] = nil end
        end
        for _, it in ipairs(extra) do
            if not have[it.id] then
                have[it.id] = true
                it.score = 0
                pool[#pool + 1] = it
            end
        end
    end
    if not warm then return pool end
    -- the draws from the catalogue, the prediction, Thompson sampling and
    -- the expected value, in C (db:click_rank); the best KEEP x n go on
    local m = db:kv_get(V_MEAN)
    local mean = type(m) == "table" and m.n > 0 and m.sum / m.n or 0
    return (db:click_rank(req, pool, {
        sample = SAMPLE, explore = EXPLORE, conversion_weight = CONVERSION_WEIGHT, keep = KEEP * n,
        value = {sum = V_SUM, count = V_COUNT, mean = mean, prior = VALUE_PRIOR},
    }))
end

function M.on_load()
    rec:counter(V_SUM, VALUE_HALF_LIFE)
    rec:counter(V_COUNT, VALUE_HALF_LIFE)
end

-- Conversions with a value: the items' sums and the mean of all.
function M.on_events(batch)
    local conv = batch:list{types = M.model.conversions, value = true, positive = false}
    if #conv == 0 then return end
    local m = rec:kv_get(V_MEAN)
    if type(m) ~= "table" then m = {sum = 0, n = 0} end
    for _, ev in ipairs(conv) do
        if type(ev.value) == "number" and ev.value > 0 then
            rec:counter_add(V_SUM, ev.item, ev.value, ev.ts)
            rec:counter_add(V_COUNT, ev.item, 1, ev.ts)
            m.sum, m.n = m.sum + ev.value, m.n + 1
        end
    end
    rec:kv_put(V_MEAN, m)
end

return M
