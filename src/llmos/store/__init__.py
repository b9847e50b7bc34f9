"""Persistent stores: vector indexes (and, later, users, profiles and memory)."""
