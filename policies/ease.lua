-- ease.lua - EASE item-item weights (Steck 2019), trained in the background.
--
-- While this policy is loaded, the server trains an EASE model on the
-- most engaged items (by default the 3,000 with the most users, lambda
-- 250) in a worker on the same schedule as ials (every 5 minutes while
-- events come in, or on demand with model.train {model = "ease"}), and
-- recd eval trains it where the server would. Strategies read it with
-- db:ease(user, k): item j scores the sum of B_ij over the user's positive
-- items as they are now, so the last click already counts before any
-- retraining. Nothing happens per event here.
--
-- Cost: training O(sum of users' items squared + items^3) off the request
-- path (a few seconds at 3,000 items); each db:ease call O(history x
-- modelled items).
local M = {}

function M.on_load() end

return M
