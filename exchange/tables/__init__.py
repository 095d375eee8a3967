"""Table steps: plan, extract once from the provider's front-end DB, validate, load each
subscriber. ``exchange.flow`` calls them; they never import the file steps."""
