"""The kernel: what every other part of the project may stand on, and which stands on nothing
of the project but the catalog's pure model beside it.

errors (the exception hierarchy), faults (named crash points), clock (Asia/Shanghai and
"now"), workdays (the statutory calendar), kinds (the registries of node and resource kinds),
settings (home directory and metadata-store URL). ``connectors/`` and ``quality/`` import only
these and ``exchange.catalog`` (checked by ``lint-imports``, see ``.importlinter``).
"""
