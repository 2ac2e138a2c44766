"""One router per resource: rank, events, models, health."""
