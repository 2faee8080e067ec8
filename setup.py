"""
Packaging for zotwist, an OCI registry on Twisted that reads zot's config.

Install with a normal (non-editable) install, then refresh Twisted's plugin
cache so that C{twistd zot} is found at once:

    pip install .
    python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

Do not use a PEP 660 C{pip install -e .}: its import hook does not put the
checkout on C{sys.path}, so C{twisted/plugins/zot_plugin.py} is never seen
and twistd says "Unknown command: zot". If you need an editable install, use
C{pip install -e . --config-settings editable_mode=compat} or run from the
checkout with C{PYTHONPATH=.}. C{conf/install.sh} and C{tests/run.sh} do all
of this for you.

C{twisted/} and C{twisted/plugins/} deliberately have no C{__init__.py}:
listing C{"twisted.plugins"} below copies C{zot_plugin.py} into the installed
Twisted's plugin directory without shadowing Twisted itself.
"""

import re
from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).resolve().parent


def _version() -> str:
    """
    Read C{__version__} from C{zotwist/__init__.py} without importing it.
    """
    text = (HERE / "zotwist" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("zotwist/__init__.py has no __version__")
    return match.group(1)


def _longDescription() -> str:
    """
    Use the README as the long description when it is there.
    """
    readme = HERE / "README.md"
    return readme.read_text(encoding="utf-8") if readme.exists() else ""


#: The multi-buffer SHA-256 kernel: a plain C library loaded with ctypes
#: (zotwist/sha256mb/kernel.py), so it needs no Python headers.  Optional:
#: without a compiler the install still succeeds and zotwist hashes with
#: hashlib.  The same flags as zotwist/sha256mb/build.sh (in-place builds).
SHA256MB = Extension(
    "zotwist.sha256mb._sha256mb",
    sources=["zotwist/sha256mb/_sha256mb.c"],
    depends=["zotwist/sha256mb/_sha256mb_kernel.h"],
    extra_compile_args=["-O3"],
    optional=True,
)


setup(
    name="zotwist",
    version=_version(),
    description="An OCI distribution-spec registry on Twisted, storing OCI image layouts",
    long_description=_longDescription(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["zotwist", "zotwist.*"]) + ["twisted.plugins"],
    include_package_data=False,
    ext_modules=[SHA256MB],
    install_requires=[
        # Site(parsePOSTFormSubmission=False) needs Twisted 25.5 or newer.
        "twisted>=25.5,<27",
        "treq>=24.9,<27",
        "pyopenssl>=24.3,<27",
        "service-identity>=24.1,<27",
        # zotwist.tls checks certificates and keys with it, bearer tokens are
        # verified with it (RS/PS/ES/EdDSA); pyOpenSSL needs it too.
        "cryptography>=42",
        "zope.interface>=6.0,<9",
        "ldaptor>=21.2,<22",
        "bcrypt>=4.1,<6",
        # extensions.metrics: Prometheus exposition, one CollectorRegistry
        # per running registry.
        "prometheus-client>=0.20,<1",
        # The Swagger UI's files, served at /swagger/ without a CDN.
        "swagger-ui-bundle>=1.1,<2",
        # storageDriver s3: the S3 client (blocking, always run in a thread
        # pool).
        "boto3>=1.34,<2",
        # cacheDriver redis: upload sessions, locks, the catalog and the
        # dedupe index shared by the instances of a cluster (blocking, in a
        # thread pool).
        "redis>=5.0,<9",
    ],
    extras_require={
        # Test-only Python dependencies; system tools (skopeo, umoci, ...)
        # are installed by tests/run.sh.
        "test": [
            "cryptography>=42",
            # tests/test_ops_openapi.py: the OpenAPI document is validated
            # and run against the registry by schemathesis.
            "openapi-spec-validator>=0.7",
            "schemathesis>=4.0,<5",
        ],
        "lint": [
            "ruff>=0.4",
        ],
    },
    entry_points={
        "console_scripts": [
            "zot=zotwist.cli:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Software Distribution",
    ],
    zip_safe=False,
)
