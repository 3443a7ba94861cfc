"""Data: sources (fetch + parse), prepare (split into streams), streams (Avalanche)."""
