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
-- It chooses among the candidates the strategies proposed, so a list is
-- at most as varied as they are: for a user deep in one genre, a lower
-- LAMBDA changes little unless the strategies bring other genres too
-- (scripts/hybrid.lua: W_POP).
-- Scores are left as they were: the order is the output.
--
-- Cost: db:mmr, O(WINDOW^2 x dim) in C (50 x 50 x 64: about 0.1 ms).
-- Knobs: LAMBDA, WINDOW, SPACE.
local LAMBDA = 0.7
local WINDOW = 50
local SPACE = "content"

local M = {}

function M.rerank(req, items)
    local db = req.rec or rec
    if #items < 3 or not db:space(SPACE) then return items end
    return db:mmr(items, {space = SPACE, lambda = LAMBDA, window = WINDOW})
end

return M
