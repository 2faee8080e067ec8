"""
The C{twistd zot} plugin: C{twistd zot --config /etc/zot/config.json}.

Nothing but the L{ServiceMaker}: C{zotwist.tap} is imported lazily, only
when twistd asks for the options or the service.
"""

from twisted.application.service import ServiceMaker

zot = ServiceMaker(
    "zotwist",
    "zotwist.tap",
    "An OCI container registry (zot-compatible config, OCI image layout storage)",
    "zot",
)
