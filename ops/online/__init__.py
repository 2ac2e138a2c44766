"""Online experiments: a server in the background, the simulated A/B client, the reports."""
