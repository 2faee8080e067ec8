# -*- test-case-name: tests.test_ops_health,tests.test_ops_openapi -*-
"""
Putting the operational parts on a site: the access log, the health
probes, the metrics (when C{extensions.metrics} is on), the OpenAPI
document and its Swagger UI.
"""

from dataclasses import dataclass

from twisted.application.service import Service
from twisted.logger import Logger

from zotwist.ops.access import AccessLog
from zotwist.ops.health import HealthChecks, healthResources
from zotwist.ops.metrics import MetricsResource, RegistryMetrics
from zotwist.ops.openapi import OpenAPIResource, SwaggerResource, buildDocument


@dataclass
class Operations:
    """
    What L{installOperations} put in place.

    @ivar health: the L{HealthChecks} behind the probes.
    @ivar metrics: the L{RegistryMetrics}, or L{None} when disabled.
    @ivar metricsPath: where the metrics are served, or L{None}.
    @ivar accessLog: the L{AccessLog} observer.
    @ivar document: the OpenAPI document served.
    @ivar site: the site they were put on.
    """

    health: HealthChecks
    metrics: RegistryMetrics | None
    metricsPath: str | None
    accessLog: AccessLog
    document: dict
    site: object = None


def metricsPathOf(config) -> str | None:
    """
    The metrics path C{config} enables, or L{None}.
    """
    extensions = config.extensions
    metrics = extensions.metrics if extensions is not None else None
    if metrics is None or not metrics.enable:
        return None
    return "/" + metrics.prometheus.path.strip("/")


def installOperations(
    site, config, store, storeService, runner, reactor, logs=None
) -> Operations:
    """
    Add the operational endpoints and request observers to C{site}.

    @param logs: the L{zotwist.logs.LogService}, whose level decides
        whether the access log wants requests; without it, always.
    """
    accessLog = AccessLog() if logs is None else AccessLog(logs.passesInfo)
    site.requestObservers.append(accessLog)
    health = HealthChecks(storeService, store.root)
    for path, resource in healthResources(health).items():
        site.root.putPath(path, resource)
    metricsPath = metricsPathOf(config)
    metrics = None
    if metricsPath is not None:
        metrics = RegistryMetrics(store, runner, site.connections, reactor)
        site.requestObservers.append(metrics)
        site.root.putPath(metricsPath, MetricsResource(metrics))
    document = buildDocument(metricsPath)
    site.root.putPath("/openapi.json", OpenAPIResource(document))
    site.root.putPath("/swagger", SwaggerResource(runner))
    return Operations(health, metrics, metricsPath, accessLog, document, site)


class OperationsService(Service):
    """
    Holds the L{Operations} in the service tree (C{getServiceNamed("ops")})
    and gathers the first storage figures once the store is ready.
    """

    _log = Logger()

    def __init__(self, operations: Operations, storeService):
        self.operations = operations
        self._storeService = storeService
        self.setName("ops")

    def startService(self) -> None:
        """
        Start the first storage walk once the store is ready (metrics on).
        """
        super().startService()
        metrics = self.operations.metrics
        if metrics is not None:
            self._storeService.whenReady().addCallbacks(
                lambda _: metrics.refreshStorage(), lambda failure: None
            )


__all__ = ["Operations", "OperationsService", "installOperations", "metricsPathOf"]
