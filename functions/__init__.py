"""Triggers and bindings only: each module is one blueprint that calls into `shared/`."""
