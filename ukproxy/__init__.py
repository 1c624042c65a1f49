"""ukproxy: a reverse proxy and load balancer in the mould of Nginx, whose backends are unikernel VMs."""

from ukproxy import compiled

compiled.install()  # before any other ukproxy module: compiled extensions or their sources, all alike
