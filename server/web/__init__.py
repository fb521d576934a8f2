"""The dashboard: pages served by the app itself, working with no internet."""
