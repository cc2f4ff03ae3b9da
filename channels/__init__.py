"""Channel adapters: one module per channel, registered by name (see channels/base.py)."""
