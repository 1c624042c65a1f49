"""A cluster of ukproxy nodes sharing one configuration and their fleet membership through etcd.

The master alone talks to etcd (`node.ClusterNode`); workers learn what it applies through the
ordinary graceful reload, so the request path never waits on etcd. See docs/cluster.md.
"""
