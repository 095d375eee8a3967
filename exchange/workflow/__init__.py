"""The subscription workflow: states, SLA clocks, housekeeping, notifications, users."""
