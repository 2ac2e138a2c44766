"""Offline evaluation: models side by side on held-out lists, with cluster-bootstrap intervals."""
