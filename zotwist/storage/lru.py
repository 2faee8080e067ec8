"""
A small cache of recently used values bounded by their total weight: the
manifest bodies and parsed manifests both stores keep in memory.
"""

from collections import OrderedDict


class LRU:
    """
    A small least-recently-used cache bounded by a total weight.
    """

    def __init__(self, maxWeight: int):
        self._data: OrderedDict = OrderedDict()
        self._weight = 0
        self._maxWeight = maxWeight

    def get(self, key):
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
            return value[0]
        return None

    def put(self, key, value, weight: int = 1) -> None:
        if key in self._data:
            self._weight -= self._data.pop(key)[1]
        if weight > self._maxWeight:
            return
        self._data[key] = (value, weight)
        self._weight += weight
        while self._weight > self._maxWeight:
            _, (_, w) = self._data.popitem(last=False)
            self._weight -= w
