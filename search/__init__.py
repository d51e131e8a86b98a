"""Search: the place, the radius, candidates, neutral ranking, pages, explanations and the neutrality audit."""
