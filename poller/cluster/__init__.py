"""Cluster mode: members that share the targets through etcd (docs/cluster.md).

settings (the `cluster:` config section), ownership (rendezvous hashing), etcd (the v3
client over the JSON gateway), coordinator (lease, members, fencing, metrics). Nothing here
is imported unless a config has a `cluster:` section, except the settings model."""
