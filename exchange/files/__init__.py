"""File and folder steps: plan against the manifest, pull once, parse tabular files, push to
each file subscriber. ``exchange.flow`` calls them; they never import the table steps (a
tabular file's rows reach table subscribers through the table steps, composed by the flow).
"""
