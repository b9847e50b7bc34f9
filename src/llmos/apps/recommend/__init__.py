"""The recommendation app: catalog, events, profiles, recommendations (issue 18)."""
