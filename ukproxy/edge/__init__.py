"""What a web front-end does at the edge, before and around a request's trip upstream (docs/architecture.md)."""
