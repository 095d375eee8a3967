"""What every resource kind shares about a run: its directory, its typed plan, its handle,
the delivery ledger and the record step. The kinds' steps (``exchange.tables``,
``exchange.files``) stand on it; ``exchange.flow`` composes them."""
