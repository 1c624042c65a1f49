"""Placement scheduler parts: node model, filter and score plugins, results, host probes."""
