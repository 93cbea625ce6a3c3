"""Users, roles and bearer API tokens."""
