"""Account provisioning on front-end nodes: one interface (``base``), one module per kind."""
