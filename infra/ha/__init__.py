"""The high-availability topology of SMS on one machine (loopback), for drills and demos: see
:mod:`infra.ha.topology` and ``python -m infra.ha up`` (docs/deploy.md)."""
