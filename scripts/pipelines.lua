-- pipelines.lua - the pipelines recd serves, and how users are split
-- between them. Reloaded with the scripts; see docs/scripting.md.
return {
  default = "main",
  pipelines = {
    -- the default: the hybrid blend, then filters, the click model's
    -- ranking by expected value (policies/click.lua: it explores by
    -- Thompson sampling), and fatigue. diversity and explore are there to
    -- add; in recd sim they cost clicks (BENCHMARKS.md)
    main = {
      strategies = {hybrid = 1.0},
      policies = {"seen", "rules", "click", "fatigue"},
    },
    popular = {strategies = {popular = 1.0}, policies = {"seen", "rules"}},
    personal = {strategies = {personal = 1.0}, policies = {"seen", "rules"}},
  },
  -- experiment = {name = "main_vs_personal", arms = {main = 0.5, personal = 0.5}},
  event_weights = {view = 1, click = 2, add_to_cart = 4, purchase = 8, skip = -1, dislike = -4},
}
