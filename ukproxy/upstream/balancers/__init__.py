"""One balancing method per module; ``ukproxy.upstream.balancing`` maps names to them."""
