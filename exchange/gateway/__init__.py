"""The API gateway: upstream APIs proxied to departments with authorization codes, quotas,
field filtering and usage statistics (docs/gateway.md)."""
