"""
What the instances of a zotwist cluster share besides the object store: a
Redis server holding upload sessions, the catalog, the dedupe index, locks
and the leader lease (L{zotwist.coordination.client}, C{locks}, C{lease}).
"""
