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
-- SAMPLE items drawn from the catalogue the person has not seen, so what
-- no strategy proposes can still be found) are ranked by expected value
--     draw(P(click)) x (1 + CONVERSION_WEIGHT x P(conversion | click))
-- where draw is Thompson sampling on the click logit: the logit plus
-- EXPLORE standard deviations of its uncertainty times a normal draw, so
-- items the model knows little about get shown in proportion to how
-- likely they are to be good. Each item carries p_click (and
-- p_conversion) as predicted. Before the model has learned anything
-- (fewer than WARM examples) the strategies' order is kept.
--
-- Cost: one db:click_predict over the pool (C: hashed features, one dot
-- product and FM cross per item), one db:sample; O(pool log pool) Lua.
-- Knobs: EXPLORE, CONVERSION_WEIGHT, SAMPLE, WARM, the model's features.
local EXPLORE = 0.5
local CONVERSION_WEIGHT = 1.0
local SAMPLE = 100
local TASTE_K, TASTE_SPACE = 50, "content"
local WARM = 200

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

-- A standard normal draw (Box-Muller).
local function gauss()
    local u = math.random()
    if u < 1e-12 then u = 1e-12 end
    return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * math.random())
end

local function logit(p)
    if p < 1e-9 then p = 1e-9 elseif p > 1 - 1e-9 then p = 1 - 1e-9 end
    return math.log(p / (1 - p))
end

function M.rerank(req, items)
    if req.user == nil then return items end
    local db = req.rec or rec
    local pool, have = {}, {}
    for i, it in ipairs(items) do
        pool[i] = it
        have[it.id] = true
    end
    local function add(extra)
        for _, it in ipairs(extra) do
            if not have[it.id] then
                have[it.id] = true
                it.score = 0
                pool[#pool + 1] = it
            end
        end
    end
    if TASTE_K > 0 and db:space(TASTE_SPACE) then
        local q = db:profile(req.user, TASTE_SPACE)
        if q then
            add(db:topk(TASTE_SPACE, q, TASTE_K, {seen_by = req.user, exclude = req.exclude}))
        end
    end
    if SAMPLE > 0 then
        add(db:sample(SAMPLE, {seen_by = req.user, exclude = req.exclude}))
    end
    local ok, res, learned = pcall(db.click_predict, db, req, pool)
    if not ok then
        if type(res) == "table" and res.name == "not_found" then return pool end
        error(res, 0)
    end
    if learned < WARM then return pool end
    for _, it in ipairs(pool) do
        local p = it.p_click or 0
        local z = logit(p) + EXPLORE * (it.click_sd or 0) * gauss()
        local draw = 1 / (1 + math.exp(-z))
        it.score = draw * (1 + CONVERSION_WEIGHT * (it.p_conversion or 0))
    end
    table.sort(pool, function(a, b) return a.score > b.score end)
    return pool
end

return M
