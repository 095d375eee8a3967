"""The authentication schemes of upstream nodes, one module each (``connectors.http.registry``
lists them)."""
