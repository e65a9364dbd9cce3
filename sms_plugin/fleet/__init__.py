"""Fleet runs: one script on many hosts in one flow run (docs/fleet.md).

- :mod:`policy`: how the hosts are gone through (parallelism, rolling batches, failure limits);
- :mod:`outcome`: what came of each host, and of the whole run;
- :mod:`scheduler`: runs one coroutine per host under a policy (pure asyncio: no Prefect, no catalog).
"""
