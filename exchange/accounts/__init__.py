"""Departments' accounts: applications, issuing and provisioning on the platform's nodes."""
